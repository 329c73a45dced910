"""One contract for every switcher family (in the spirit of scikit-learn's check_estimator)."""

import numpy as np
import pytest

from edgeswitch.errors import DataError, ModelError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher import LinearSwitcher, MLPSwitcher, TreeSwitcher, load_switcher
from edgeswitch.switcher.select import SwitcherSpec, dmd_area, dmd_targets, select_switcher
from tests.synthetic import edge_outputs

FAMILIES = [LinearSwitcher(), MLPSwitcher(epochs=150), TreeSwitcher(trees=40)]


_synthetic = edge_outputs


@pytest.mark.parametrize("sw", FAMILIES, ids=lambda s: s.family)
def test_switcher_contract(sw, tmp_path):
    edge, agree, groups = _synthetic()
    with pytest.raises(NotFittedError):
        sw.trust(edge)
    with pytest.raises(DataError, match="within"):
        sw.fit(edge, agree * 2)
    with pytest.raises(DataError, match="shape"):
        sw.fit(edge, agree[:-1])
    assert sw.fit(edge, agree, groups) is sw
    test, t_agree, _ = _synthetic(seed=1)
    s = sw.trust(test)
    assert s.shape == (len(test),) and np.all((s >= 0) & (s <= 1))
    assert np.mean((s > 0.5) == (t_agree > 0.5)) > 0.85, "it must learn the agreement rule"
    assert sw.predict(test).tolist() == (s >= 0.5).astype(int).tolist()
    np.testing.assert_allclose(sw.predict_proba(test).sum(axis=1), 1.0)
    loaded = load_switcher(sw.save(tmp_path / "sw.npz"))
    assert type(loaded) is type(sw) and loaded.family == sw.family
    np.testing.assert_allclose(loaded.trust(test), s, rtol=1e-6, atol=1e-7)
    assert loaded.n_params == sw.n_params and loaded.macs == sw.macs
    # cheap next to the edge: under 5% of the demo's edge model (about 219k MACs per clip)
    assert 0 < sw.macs < 0.05 * 218_784
    other = ModelOutput(proba=test.proba, embedding=np.zeros((len(test), 9)))
    with pytest.raises(ModelError, match="fitted on"):
        sw.trust(other)


def test_linear_with_a_huge_penalty_is_the_edge_confidence():
    """Unpenalised confidence columns: as l2 grows the switcher ranks clips by confidence."""
    edge, agree, groups = _synthetic()
    from edgeswitch.switcher.features import confidence

    sw = LinearSwitcher(l2=1e6, features=("proba", "confidence")).fit(edge, agree, groups)
    s = sw.trust(edge)
    w = sw.w_[:4]
    assert np.abs(w).max() < 1e-3, "class columns are shrunk to zero"
    c = confidence(edge.proba)
    assert abs(np.corrcoef(s, c @ sw.w_[4:])[0, 1]) > 0.99


def test_dmd_targets_hand_computed():
    edge = np.array([[0.6, 0.4], [0.3, 0.7]])
    answer = np.array([[0.8, 0.2], [0.9, 0.1]])
    np.testing.assert_allclose(dmd_targets(edge, answer, "hard"), [1, 0])
    np.testing.assert_allclose(dmd_targets(edge, answer, "soft"), [0.8, 0.1], rtol=1e-6)
    np.testing.assert_allclose(dmd_targets(edge, answer, "gain"), [1.0, 0.2], rtol=1e-6)
    with pytest.raises(DataError, match="unknown DMD target"):
        dmd_targets(edge, answer, "best")


def test_dmd_area_rewards_offloading_disagreements_first():
    el = np.array([0, 0, 1, 1])
    al = np.array([0, 1, 1, 0])       # clips 1 and 3 disagree
    good = dmd_area(np.array([1.0, 0.0, 1.0, 0.1]), el, al)
    bad = dmd_area(np.array([0.0, 1.0, 0.1, 1.0]), el, al)
    assert good > bad


def test_selection_picks_a_candidate_by_group_cv():
    edge, agree, groups = _synthetic()
    # the answer posterior: agrees with the edge's class exactly where `agree` says
    el = edge.proba.argmax(1)
    answer = np.eye(4)[np.where(agree > 0, el, (el + 1) % 4)]
    cands = (SwitcherSpec("linear", "hard", ("confidence",), l2=1.0),
             SwitcherSpec("linear", "hard", ("proba", "confidence", "embedding"), l2=1e-3))
    sw, table = select_switcher(edge, answer, groups, candidates=cands)
    assert sw.meta["spec"]["features"] == ["proba", "confidence", "embedding"]
    assert table[0]["spec"].startswith("entropy") and len(table) == 3
    # one group: cross-validation over two random halves of its clips
    one, table = select_switcher(edge, answer, np.zeros(len(groups)), candidates=cands)
    assert len(table) == 3
    # too few clips to cross-validate at all: the first candidate, and the table says why
    few, table = select_switcher(ModelOutput(edge.proba[:10], edge.embedding[:10]), answer[:10],
                                 np.zeros(10), candidates=cands)
    assert few.meta["spec"]["features"] == ["confidence"] and "no selection" in table[0]["note"]
