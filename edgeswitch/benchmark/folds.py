"""Cross-validation folds by group: every group is tested exactly once per repeat.

A fold fixes its test groups and deals the other groups out to train / pool / calib with the
fold's seed, by the config's split shares, so each fold is a complete run of the method on
subjects it has never tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.data.splits import SPLITS, Splits, assign_groups, split_by_group
from edgeswitch.errors import DataError


@dataclass(frozen=True)
class Fold:
    """One train/pool/calib/test assignment of groups."""

    index: int                # 0-based, over all repeats
    repeat: int
    seed: int
    groups: dict[str, list[str]]   # split name -> its groups

    @property
    def name(self) -> str:
        return f"fold{self.index:02d}"

    @property
    def test_groups(self) -> list[str]:
        return self.groups["test"]

    def split(self, data: ClipBatch) -> Splits:
        """The clips of this fold: pool and calib come back without labels."""
        return split_by_group(data, seed=self.seed,
                              fixed={s: list(g) for s, g in self.groups.items()})

    def to_dict(self) -> dict:
        return {"index": self.index, "repeat": self.repeat, "seed": self.seed,
                "groups": self.groups}


def make_folds(data: ClipBatch, n_folds: int, repeats: int = 1, seed: int = 0,
               shares: tuple[float, ...] = (0.5, 0.2, 0.1, 0.2)) -> list[Fold]:
    """`n_folds` folds per repeat; repeat r reshuffles the groups with seed `seed + r`.

    Within a repeat the test groups partition the data set's groups. The train / pool / calib
    shares are `shares[:3]` (the test share is ignored: the fold fixes the test groups). Fold i
    of repeat r deals them, and trains its models, with seed `seed + 1000 r + i`."""
    groups = np.unique(data.groups)
    return deal_folds(groups, groups, n_folds, repeats, seed, shares, data.name)


def deal_folds(groups: np.ndarray, testable: np.ndarray, n_folds: int, repeats: int,
               seed: int, shares: tuple[float, ...], name: str, train: bool = True
               ) -> list[Fold]:
    """Folds whose test groups partition `testable` (once per repeat); every other group is
    dealt out to train / pool / calib by `shares` (without `train`: pool and calib only, for
    recorded outputs, where nothing is trained)."""
    if not isinstance(n_folds, int) or n_folds < 2:
        raise DataError(f"folds must be an int >= 2, got {n_folds!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise DataError(f"repeats must be an int >= 1, got {repeats!r}")
    if n_folds > len(testable):
        what = "groups" if len(testable) == len(groups) else \
            "groups with a label on every clip"
        raise DataError(f"{name}: {len(testable)} {what} cannot make {n_folds} folds (each "
                        "fold tests at least one group); ask for fewer folds")
    need = 3 if train else 2
    free = len(groups) - int(np.ceil(len(testable) / n_folds))
    if free < need:
        raise DataError(f"{name}: with {n_folds} folds of {len(groups)} groups, a fold "
                        f"leaves {free} groups for {'train, ' if train else ''}pool and calib, "
                        f"which need {need}; use fewer folds or a data set with more groups")
    folds = []
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        order = rng.permutation(testable)
        for i, chunk in enumerate(np.array_split(order, n_folds)):
            fold_seed = seed + 1000 * r + i
            fixed = {"test": chunk.tolist()} | ({} if train else {"train": []})
            dealt = assign_groups(groups, shares, fold_seed, fixed)
            folds.append(Fold(index=len(folds), repeat=r, seed=fold_seed,
                              groups={s: sorted(str(g) for g in dealt[s]) for s in SPLITS}))
    return folds


def check_fold_classes(fold: Fold, splits: Splits) -> None:
    """Every class must be in the fold's training split, or a model cannot learn it."""
    present = set(np.unique(splits.train.y).tolist())
    missing = [c for k, c in enumerate(splits.train.classes) if k not in present]
    if missing:
        raise DataError(f"{fold.name}: the training groups {fold.groups['train']} hold no clip "
                        f"of class(es) {missing}; use fewer folds, or a data set where each "
                        "group covers more classes")
