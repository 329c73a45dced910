"""Group splits: train (labelled), pool (DMD, labels hidden), calib (labels hidden), test."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.errors import DataError

SPLITS = ("train", "pool", "calib", "test")


@dataclass(frozen=True)
class Splits:
    """The four disjoint-by-group parts of a data set. `pool` and `calib` carry no labels."""

    train: ClipBatch
    pool: ClipBatch
    calib: ClipBatch
    test: ClipBatch
    # Labels removed from pool and calib, kept apart for what may use them: the supervised
    # ablation and the label-noise audit. DMD and calibration never receive these.
    hidden_labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def groups(self) -> dict[str, list[str]]:
        return {s: sorted(set(getattr(self, s).groups.tolist())) for s in SPLITS}


def group_counts(n_groups: int, fractions: tuple[float, ...]) -> list[int]:
    """Whole numbers of groups per split, each at least 1, summing to `n_groups`."""
    if n_groups < len(fractions):
        raise DataError(
            f"{n_groups} groups cannot fill {len(fractions)} splits; each split needs a group"
        )
    f = np.asarray(fractions, dtype=float)
    if (f <= 0).any():
        raise DataError(f"split fractions must be positive, got {fractions}")
    f = f / f.sum()
    counts = np.maximum(1, np.floor(f * n_groups).astype(int))
    # hand the remainder to the splits furthest below their share, then take back any excess
    while counts.sum() < n_groups:
        counts[np.argmax(f * n_groups - counts)] += 1
    while counts.sum() > n_groups:
        counts[np.argmax(np.where(counts > 1, counts - f * n_groups, -np.inf))] -= 1
    return counts.tolist()


def assign_groups(groups: np.ndarray, fractions: tuple[float, ...], seed: int,
                  fixed: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Which groups go to which split: `fixed` ones as given, the rest shuffled with `seed` and
    dealt out by `fractions` among the splits that `fixed` leaves open."""
    fixed = {k: [str(g) for g in v] for k, v in (fixed or {}).items()}
    unknown_splits = set(fixed) - set(SPLITS)
    if unknown_splits:
        raise DataError(f"unknown split names {sorted(unknown_splits)}; use {list(SPLITS)}")
    taken = [g for v in fixed.values() for g in v]
    missing = sorted(set(taken) - set(groups.tolist()))
    if missing:
        raise DataError(f"split groups {missing} do not exist; groups are {groups.tolist()}")
    if len(taken) != len(set(taken)):
        raise DataError("a group is assigned to two splits")
    rest = np.random.default_rng(seed).permutation(np.setdiff1d(groups, taken))
    open_splits = [s for s in SPLITS if s not in fixed]
    out = {s: np.asarray(v) for s, v in fixed.items()}
    if open_splits:
        counts = group_counts(len(rest), tuple(fractions[SPLITS.index(s)] for s in open_splits))
        bounds = np.cumsum([0, *counts])
        for i, s in enumerate(open_splits):
            out[s] = rest[bounds[i] : bounds[i + 1]]
    elif len(rest):
        raise DataError(f"groups {rest.tolist()} are in no split")
    return out


def split_by_group(batch: ClipBatch,
                   fractions: tuple[float, float, float, float] = (0.5, 0.2, 0.1, 0.2),
                   seed: int = 0, fixed: dict[str, list[str]] | None = None) -> Splits:
    """Deal the groups out to (train, pool, calib, test): `fixed` assignments first, the rest
    shuffled with `seed` by `fractions`.

    No group lands in two splits. The pool and calib parts come back with their labels removed.
    """
    batch.require_labels("splitting into train and test")
    chosen_by_split = assign_groups(np.unique(batch.groups), fractions, seed, fixed)
    parts, hidden = {}, {}
    for name in SPLITS:
        chosen = chosen_by_split[name]
        if len(chosen) == 0:
            raise DataError(f"split '{name}' received no group")
        part = batch.subset(np.isin(batch.groups, chosen), name=f"{batch.name}:{name}")
        if name in ("pool", "calib"):
            hidden[name] = part.y
            part = part.without_labels()
        parts[name] = part
    return Splits(**parts, hidden_labels=hidden)
