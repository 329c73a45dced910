"""Switcher targets, one constructor for every family, and model selection on DMD records alone.

Targets (1 = the edge answer stands), from the edge posterior p and the answer posterior q that
an offloaded clip would get (the cloud's, or the fused one), neither needing a label:
* `hard`: the edge's class is q's class (the paper's agreement);
* `soft`: q's probability of the edge's class (the paper's alignment);
* `gain`: 1 - (q(answer) - q(edge class)), one minus the expected gain of offloading.

`select_switcher` picks a family / target / augmentation by leave-group-out CV on the records,
scoring each candidate by its label-free area: how fast offloading its lowest-scored held-out
clips removes their disagreement with the answer they would get. The edge's entropy is scored
the same way, so a reader sees whether the learned switcher beat it on the DMD records.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from edgeswitch.config import FEATURE_GROUPS, TARGETS, SwitcherConfig
from edgeswitch.errors import DataError
from edgeswitch.evaluation.curves import accuracy_by_k, offload_order, trapezoid_auc
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.features import confidence

_DEFAULT = SwitcherConfig()  # the schema's [switcher] table holds the defaults


@dataclass(frozen=True)
class SwitcherSpec:
    family: str = _DEFAULT.family
    target: str = _DEFAULT.target
    features: tuple[str, ...] = tuple(_DEFAULT.features)
    hidden: int = _DEFAULT.hidden
    epochs: int = _DEFAULT.epochs
    l2: float = _DEFAULT.l2
    augment_views: int = _DEFAULT.augment_views

    def build(self, seed: int = 0, name: str = "dmd", meta: dict | None = None) -> Switcher:
        from edgeswitch.switcher.linear import LinearSwitcher
        from edgeswitch.switcher.mlp import MLPSwitcher
        from edgeswitch.switcher.trees import TreeSwitcher

        common = dict(target=self.target, features=tuple(self.features), seed=seed, name=name,
                      meta=dict(meta or {}))
        if self.family == "mlp":
            return MLPSwitcher(hidden=self.hidden, epochs=self.epochs, **common)
        if self.family == "linear":
            return LinearSwitcher(l2=self.l2, **common)
        if self.family == "gbt":
            return TreeSwitcher(**common)
        raise DataError(f"unknown switcher family {self.family!r}; use linear, mlp or gbt")

    @classmethod
    def from_config(cls, sc) -> SwitcherSpec:
        """The spec of a `[switcher]` config table (edgeswitch.config.SwitcherConfig)."""
        return cls(sc.family, sc.target, tuple(sc.features), hidden=sc.hidden,
                   epochs=sc.epochs, l2=sc.l2, augment_views=sc.augment_views)

    def label(self) -> str:
        aug = f", {self.augment_views} views" if self.augment_views else ""
        return f"{self.family}/{self.target}/{'+'.join(self.features)}{aug}"


def dmd_targets(edge_proba: np.ndarray, answer_proba: np.ndarray, kind: str) -> np.ndarray:
    """Per-record target in [0, 1] (see the module docstring)."""
    el = np.asarray(edge_proba).argmax(axis=1)
    q = np.asarray(answer_proba, dtype=np.float64)
    rows = np.arange(len(el))
    if kind == "hard":
        return (q.argmax(axis=1) == el).astype(np.float32)
    if kind == "soft":
        return np.clip(q[rows, el], 0, 1).astype(np.float32)
    if kind == "gain":
        return np.clip(1 - (q.max(axis=1) - q[rows, el]), 0, 1).astype(np.float32)
    raise DataError(f"unknown DMD target {kind!r}; use one of {list(TARGETS)}")


def fit_switcher(spec: SwitcherSpec, edge: ModelOutput, target: np.ndarray,
                 groups: np.ndarray | None, seed: int = 0, name: str = "dmd",
                 meta: dict | None = None, cache: FitCache | None = None) -> Switcher:
    """`spec` fitted on these records; with a `cache`, a fit it has seen (the same spec, seed
    and records) is a copy of that one instead of a second, identical training."""
    key = None if cache is None else cache.key(spec, edge, target, groups, seed, name, meta)
    if key is not None and key in cache.fitted:
        return copy.deepcopy(cache.fitted[key])
    sw = spec.build(seed, name, meta)
    sw.fit(edge, target, groups)
    sw.meta["spec"] = asdict(spec) | {"features": list(spec.features)}
    if key is not None:
        cache.fitted[key] = copy.deepcopy(sw)
    return sw


class FitCache:
    """Switchers fitted so far, by everything a fit reads. Every fit is seeded, so a second fit
    of the same spec on the same records would give the same switcher: in a benchmark fold,
    `dmd` and `dmd-linear` are one spec, the supervised ablation is the same in both answer
    modes, and CV's winner, refitted on all records, is often one of the variants."""

    def __init__(self) -> None:
        self.fitted: dict[tuple, Switcher] = {}

    @staticmethod
    def key(spec: SwitcherSpec, edge: ModelOutput, target: np.ndarray,
            groups: np.ndarray | None, seed: int, name: str, meta: dict | None) -> tuple:
        h = hashlib.sha256()
        for a in (edge.proba, edge.embedding, np.asarray(target)):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        # groups by their names (a fit reads them as str, whatever the array's width)
        h.update(b"none" if groups is None else
                 "\0".join(np.asarray(groups).astype(str).tolist()).encode())
        return (spec, seed, name, json.dumps(meta, sort_keys=True, default=str), h.hexdigest())


def dmd_area(scores: np.ndarray, edge_label: np.ndarray, answer_label: np.ndarray,
             seed: int = 0) -> float:
    """Label-free area: the hybrid's agreement with the answer an offloaded clip would get,
    against the offload rate (1 at full offload; higher is better)."""
    order = offload_order(scores, seed)
    agree = edge_label == answer_label
    acc = accuracy_by_k(agree, np.ones_like(agree), order)
    x = np.arange(len(acc)) / len(agree)
    return trapezoid_auc(x, acc)


CV_CANDIDATES = (
    # linear on everything, the confidence triplet unpenalised: shrinks to a mix of confidences
    *(SwitcherSpec("linear", t, FEATURE_GROUPS, augment_views=v)
      for t in ("hard", "gain") for v in (0, 8)),
    *(SwitcherSpec("gbt", t, ("proba", "confidence")) for t in ("hard", "gain")),
    *(SwitcherSpec("mlp", t, FEATURE_GROUPS, augment_views=8) for t in ("hard", "gain")),
)


def select_switcher(edge: ModelOutput, answer_proba: np.ndarray, groups: np.ndarray,
                    seed: int = 0, candidates: tuple[SwitcherSpec, ...] = CV_CANDIDATES,
                    n_original: int | None = None, cache: FitCache | None = None
                    ) -> tuple[Switcher, list[dict]]:
    """Leave-group-out CV over `candidates` on DMD records; the winner is refitted on all.

    Records may hold rotated views after the `n_original` pool clips (views are stored view by
    view, so record i of view v is pool clip i); held-out scoring uses original clips only, and
    a candidate with no views trains on the originals only. `cache` serves the winner's refit
    when the caller fitted the same spec on the same records (see `FitCache`).
    """
    groups = np.asarray(groups).astype(str)
    n = len(groups) if n_original is None else n_original
    is_orig = np.arange(len(groups)) < n
    el = edge.proba.argmax(axis=1)
    al = np.asarray(answer_proba).argmax(axis=1)
    rng = np.random.default_rng(seed)
    if len(np.unique(groups[is_orig])) < 2:
        # one group only: two random halves of its clips (a record's views go with its clip)
        if n < 20:  # too few to cross-validate: the first candidate, unchosen, says so
            sw = _fit_on(candidates[0], edge, answer_proba, groups, is_orig, seed, cache)
            return sw, [{"spec": candidates[0].label(), "dmd_area": None,
                         "note": f"only {n} DMD clips of one group: no selection"}]
        half = rng.permutation(n) % 2
        groups = np.asarray([f"half{h}" for h in half[np.arange(len(groups)) % n]])
    ug = np.unique(groups)
    folds = np.array_split(rng.permutation(ug), min(5, len(ug)))
    table = []
    ent = 1 - confidence(edge.proba)[:, 2]
    ent_area = np.mean([dmd_area(ent[np.isin(groups, f) & is_orig],
                                 el[np.isin(groups, f) & is_orig],
                                 al[np.isin(groups, f) & is_orig], seed) for f in folds])
    table.append({"spec": "entropy (reference)", "dmd_area": float(ent_area)})
    best, best_area = None, -np.inf
    for spec in candidates:
        use = np.ones(len(groups), bool) if spec.augment_views else is_orig
        target = dmd_targets(edge.proba, answer_proba, spec.target)
        areas = []
        for f in folds:
            va = np.isin(groups, f)
            tr = use & ~va
            te = va & is_orig
            if tr.sum() < 10 or te.sum() < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sw = fit_switcher(spec, _take(edge, tr), target[tr], groups[tr], seed)
            areas.append(dmd_area(sw.trust(_take(edge, te)), el[te], al[te], seed))
        if not areas:
            continue
        area = float(np.mean(areas))
        table.append({"spec": spec.label(), "dmd_area": area})
        if area > best_area:
            best, best_area = spec, area
    if best is None:  # no fold had enough records: as above
        best = candidates[0]
        table.append({"spec": best.label(), "dmd_area": None,
                      "note": "too few DMD records per group to cross-validate: no selection"})
    return _fit_on(best, edge, answer_proba, groups, is_orig, seed, cache), table


def _fit_on(spec: SwitcherSpec, edge: ModelOutput, answer_proba: np.ndarray, groups: np.ndarray,
            is_orig: np.ndarray, seed: int, cache: FitCache | None = None) -> Switcher:
    """`spec` fitted on every record (rotated views only if it asks for them)."""
    use = np.ones(len(groups), bool) if spec.augment_views else is_orig
    target = dmd_targets(edge.proba, answer_proba, spec.target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_switcher(spec, _take(edge, use), target[use], groups[use], seed,
                            cache=cache)


def _take(edge: ModelOutput, mask: np.ndarray) -> ModelOutput:
    return ModelOutput(edge.proba[mask], edge.embedding[mask])
