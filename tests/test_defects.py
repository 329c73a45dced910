"""Regression tests of defects a review found; each failed before its fix.

- a step without --data took the watch preset whatever data set its DMD records came from;
- `watch --stop-after 0` (or a negative N) meant "no limit";
- `watch --events` with an edge that has no `fall` class truncated --out and --events and
  created --log before refusing;
- the README's Python snippet and benchmarks/latency.py built the hybrid without the fusion
  that `demo` deploys;
- the drift thresholds were documented as "set on calibration data" although they are
  constants tuned once on the watch data's calibration subject;
- a `latency_calls` below 20 stopped `build` with an IndexError (measure's warm-up and the
  cloud's 20 calls indexed past the clips cut for `latency_calls` calls);
- `isinstance(cloud, CloudClient)` held for every classifier, so a cloud model in this
  process was never wrapped in InProcessCloud and its answers went unchecked.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.cli.main import build_parser, main
from edgeswitch.config import preset

ROOT = Path(__file__).resolve().parents[1]


# --- DMD records carry their data set; a step without --data takes its preset -------------

def test_train_switcher_without_data_takes_the_preset_of_the_records_data_set(tmp_path,
                                                                             bm_files):
    """BasicMotions' preset trains the switcher 100 epochs at most, watch's 400: records from
    `distill --data basicmotions` must give the first (they gave the second)."""
    from edgeswitch.dmd import DMDRecords
    from edgeswitch.switcher import load_switcher

    dmd = tmp_path / "dmd.parquet"
    assert main(["distill", "--data", "basicmotions", "--edge", str(bm_files["edge"]),
                 "--cloud", str(bm_files["cloud"]), "--out", str(dmd), "--quiet"]) == 0
    assert main(["train-switcher", "--dmd", str(dmd), "--out", str(tmp_path / "sw.npz"),
                 "--quiet"]) == 0
    spec = load_switcher(tmp_path / "sw.npz").meta["spec"]
    wanted, watch = preset("basicmotions").switcher.epochs, preset("watch").switcher.epochs
    assert wanted != watch  # else this test shows nothing
    assert spec["epochs"] == wanted
    assert DMDRecords.from_parquet(dmd).dataset == "basicmotions"


def test_sharded_records_name_their_data_set(tmp_path, bm_files, basicmotions):
    """A sharded run's folder names the corpus it read, whichever part is read first."""
    from edgeswitch.dmd import DMDRecords
    from tests.corpus import write_corpus

    corpus = tmp_path / "corpus"
    write_corpus(basicmotions.without_labels(), corpus, files=2)
    out = tmp_path / "dmd"
    assert main(["distill", "--data", str(corpus), "--edge", str(bm_files["edge"]),
                 "--cloud", str(bm_files["cloud"]), "--out", str(out), "--shard-size", "16",
                 "--quiet"]) == 0
    assert DMDRecords.from_parquet(out).dataset == str(corpus)


def test_records_keep_their_data_set_through_parquet_and_joins(tmp_path):
    from edgeswitch.dmd import DMDRecords

    def records(dataset: str, n: int = 4) -> DMDRecords:
        p = np.full((n, 2), 0.5, np.float32)
        return DMDRecords(np.arange(n).astype(str), np.zeros(n).astype(str), p,
                          np.zeros((n, 3), np.float32), p, ("a", "b"), "e", "c", dataset)

    back = DMDRecords.from_parquet(records("basicmotions").to_parquet(tmp_path / "r.parquet"))
    assert back.dataset == "basicmotions"
    assert records("watch").concat(records("watch")).dataset == "watch"
    assert records("watch").concat(records("other.npz")).dataset == ""  # mixed: no preset


# --- watch --stop-after ------------------------------------------------------------------

@pytest.mark.parametrize("n", ["0", "-3"])
def test_watch_stop_after_below_one_is_refused(n, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["watch", "video.mp4", "--stop-after", n])
    assert exc.value.code == 2
    assert "--stop-after" in capsys.readouterr().err


def test_watch_stop_after_one_is_one():
    assert build_parser().parse_args(["watch", "v.mp4", "--stop-after", "1"]).stop_after == 1


# --- watch --events without a fall class touches nothing --------------------------------

def test_watch_events_without_a_fall_class_leaves_the_outputs_alone(tmp_path, capsys):
    """Refused before any output is opened: --out and --events keep their contents and no
    --log is created."""
    pytest.importorskip("av", reason="needs the video extra")
    from edgeswitch.data import ClipBatch
    from edgeswitch.video.edge_models import PoseClassifier

    rng = np.random.default_rng(0)
    n = 16
    seqs = ClipBatch(rng.normal(size=(n, 32, 60)).astype(np.float32), np.arange(n) % 2,
                     np.arange(n).astype(str), ("sit", "walk"), np.arange(n).astype(str))
    model = tmp_path / "pose.onnx"
    PoseClassifier(epochs=1, width=4).fit(seqs).save(model)
    out, events, log = tmp_path / "out.jsonl", tmp_path / "events.jsonl", tmp_path / "d.sqlite"
    out.write_text("earlier run\n")
    events.write_text("earlier events\n")
    code = main(["watch", str(tmp_path / "missing.mp4"), "--edge", f"pose:{model}",
                 "--events", str(events), "--out", str(out), "--log", str(log)])
    assert code == 2
    assert "'fall' class" in capsys.readouterr().err
    assert out.read_text() == "earlier run\n"
    assert events.read_text() == "earlier events\n"
    assert not log.exists()


# --- the drift thresholds say what they are ------------------------------------------------

def test_drift_thresholds_are_documented_as_constants_not_fitted():
    """They were tuned once on the watch data's calibration subject; nothing derives them per
    deployment, so nothing may say they are "set on calibration data"."""
    from edgeswitch.config import DriftConfig

    for name in ("ks_threshold", "psi_threshold", "input_threshold"):
        help_text = DriftConfig.__pydantic_fields__[name].description
        assert "set on calibration data" not in help_text, name
        assert "constant" in help_text and "watch" in help_text, name
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 ROOT / "edgeswitch" / "runtime" / "drift.py"]:
        text = " ".join(path.read_text().split())
        assert not re.search(r"thresholds? (are |is )?set on (held-out )?calibration data",
                             text, flags=re.I), path


# --- fewer latency calls than measure's warm-up ----------------------------------------------

@pytest.fixture(scope="module")
def small_run(basicmotions):
    """`build` on BasicMotions with tiny models: Artifacts with a fitted fusion."""
    from edgeswitch.pipeline import build

    cfg = preset("basicmotions")
    cfg.edge.epochs = cfg.cloud.epochs = 3
    cfg.latency_calls = 3
    a = build(cfg, progress=False, data=basicmotions)
    assert a.fusion is not None  # the default config fuses: else this shows nothing
    return a


def test_costs_with_fewer_latency_calls_than_the_warm_up(small_run):
    """`latency_calls` 3 (the schema allows >= 1) indexed past the clips it had cut (the
    warm-up makes 10 calls, the cloud 20): an IndexError that stopped `build`."""
    assert small_run.cfg.latency_calls == 3
    costs = small_run.costs
    assert min(costs.edge_ms, costs.switcher_ms, costs.cloud_ms) > 0


# --- the hybrid of the README and of benchmarks/latency.py is the one demo deploys -------

@pytest.fixture
def hybrids(monkeypatch):
    """Every HybridClassifier made while the test runs."""
    from edgeswitch.runtime.hybrid import HybridClassifier

    made = []
    init = HybridClassifier.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(HybridClassifier, "__init__", spy)
    return made


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_snippet_deploys_the_fusion(small_run, hybrids, monkeypatch):
    import edgeswitch.pipeline

    monkeypatch.setattr(edgeswitch.pipeline, "build", lambda cfg, *a, **k: small_run)
    blocks = [b for b in _python_blocks((ROOT / "README.md").read_text())
              if "classify(" in b]
    assert blocks, "README.md has no Python snippet that classifies"
    for block in blocks:
        hybrids.clear()
        exec(compile(block, "README.md", "exec"), {})
        assert hybrids, "the snippet made no HybridClassifier"
        assert all(h.fusion is small_run.fusion for h in hybrids)


def test_latency_benchmark_times_the_hybrid_with_the_fusion(small_run, hybrids, monkeypatch,
                                                           tmp_path):
    import edgeswitch.pipeline

    monkeypatch.setattr(edgeswitch.pipeline, "build", lambda cfg, *a, **k: small_run)
    monkeypatch.chdir(tmp_path)  # whatever it writes stays here
    monkeypatch.setattr(sys, "argv", ["latency.py", "--dataset", "basicmotions", "--calls",
                                      "25"])
    committed = ROOT / "benchmarks" / "results" / "latency.json"
    before = committed.read_bytes()
    runpy.run_path(str(ROOT / "benchmarks" / "latency.py"), run_name="__main__")
    assert hybrids, "the benchmark made no HybridClassifier"
    assert all(h.fusion is small_run.fusion for h in hybrids)
    # a plain run writes no results file (it wrote benchmarks/results/latency.json)
    assert list(tmp_path.iterdir()) == [] and committed.read_bytes() == before


# --- a benchmark writes its committed results only when asked ----------------------------

def test_no_benchmark_writes_its_committed_results_unless_asked():
    """Every benchmark that writes JSON does so through benchmarks/_results.py: --json PATH or
    --save; none defaults a path into benchmarks/results/."""
    writers = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"default=[\"']benchmarks/results/", text), path.name
        if "benchmarks/results" in text or "write_results" in text:
            writers.append(path.name)
            assert "output_args(ap" in text and "write_results(args" in text, path.name
    assert {"latency.py", "video.py", "load.py"} <= set(writers)


# --- a cloud model in this process is checked like any cloud's answer ---------------------

class _BrokenCloud:
    """The cloud model with one thing wrong: a NaN in its answer."""

    def __init__(self, model) -> None:
        self.model, self.classes_, self.name = model, model.classes_, "broken"

    def predict_proba(self, X):
        p = self.model.predict_proba(X).copy()
        p[0, 0] = np.nan
        return p


def test_a_cloud_model_in_process_is_wrapped_and_checked(small_run):
    """`isinstance(cloud, CloudClient)` held for every classifier (a runtime-checkable
    Protocol), so a model passed as the cloud was never wrapped in InProcessCloud and its
    answers were used unchecked: a NaN reached the answers."""
    from edgeswitch.cloud.client import InProcessCloud
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.switcher.calibrate import calibrate_offload

    a = small_run
    op = calibrate_offload(np.linspace(0, 1, 101), 1.0)  # offload every clip
    hybrid = HybridClassifier(a.edge, a.deployed_router, _BrokenCloud(a.cloud), op)
    assert isinstance(hybrid.cloud, InProcessCloud)
    res = hybrid.classify(a.splits.test.X[:8])
    assert res.offloaded.all() and not res.verified.any()
    assert set(res.reason) == {"malformed"}
    assert np.isfinite(res.proba).all()  # the edge's answers stand, flagged
