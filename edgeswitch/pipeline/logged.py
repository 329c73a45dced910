"""A decision log as training and test data for a switcher, with its sampling bias corrected.

Only clips the cloud answered carry a target, and they are not a random sample of the stream:
* **offloaded** clips were sent because the switcher doubted the edge (low scores);
* **shadow** clips are a uniform random share of the clips the switcher *kept*
  (`classify --shadow-rate R`), sent for the log only.

Every logged clip records which of the two strata it fell in (`offloaded`), answered or not, so
the correction needs no model of the sampling: post-stratification (Horvitz-Thompson with the
realised sampling fraction of each stratum). An answered clip of stratum s gets weight
`n_s / a_s`, n_s the stratum's logged clips and a_s those of them with a cloud answer. For the
kept stratum that is about 1 / R; for the offloaded one 1 (more when some offloads fell back).
The weighted answered clips then stand for the whole logged stream, in expectation, provided a
cloud failure is unrelated to the clip (a fallback is a timeout or an error, not a verdict).
Without shadow clips the kept stratum has no answered clip and nothing can stand for it: the
log is refused (weights cannot invent support the sample does not have).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput


@dataclass(frozen=True)
class LoggedClips:
    """Every logged clip with an edge embedding, in log order (time, then row id)."""

    edge: ModelOutput          # the edge's probabilities and embedding, every clip
    cloud_proba: np.ndarray    # [n, K], NaN rows where the cloud gave no answer
    offloaded: np.ndarray      # [n] the router sent the clip
    shadow: np.ndarray         # [n] sent for the log only
    groups: np.ndarray         # [n] device / subject / recording
    time: np.ndarray           # [n] unix seconds
    classes: tuple[str, ...]
    edge_model: str
    cloud_model: str
    skipped: int = 0           # rows without an embedding (not usable by a switcher)

    def __len__(self) -> int:
        return len(self.offloaded)

    @property
    def answered(self) -> np.ndarray:
        return ~np.isnan(self.cloud_proba[:, 0])

    def take(self, mask: np.ndarray) -> LoggedClips:
        return LoggedClips(ModelOutput(self.edge.proba[mask], self.edge.embedding[mask]),
                           self.cloud_proba[mask], self.offloaded[mask], self.shadow[mask],
                           self.groups[mask], self.time[mask], self.classes, self.edge_model,
                           self.cloud_model, self.skipped)

    def split_by_time(self, holdout: float) -> tuple[LoggedClips, LoggedClips]:
        """(earlier part, the latest `holdout` share): the later clips judge the switcher
        trained on the earlier ones, as its next deployment would."""
        if not 0 < holdout < 1:
            raise DataError(f"holdout must be within (0, 1), got {holdout}")
        n_hold = int(np.ceil(holdout * len(self)))
        if n_hold < 1 or n_hold >= len(self):
            raise DataError(f"a log of {len(self)} clips cannot hold back {holdout:.0%} "
                            "and keep some to train on")
        late = np.arange(len(self)) >= len(self) - n_hold
        return self.take(~late), self.take(late)


def read_log(path: str | Path) -> LoggedClips:
    """The decisions of a log (opened read-only; a file that is not a log is refused)."""
    from edgeswitch.runtime.decision_log import DecisionLog

    path = Path(path)
    if not path.is_file():
        raise DataError(f"decision log not found: {path}")
    with DecisionLog(path) as log:
        df = log.frame()
        classes, edge_model, cloud_model = log.classes, log.edge_model, log.cloud_model
    if df.empty:
        raise DataError(f"{path} holds no decisions")
    df = df.sort_values(["time", "id"], kind="stable")
    has_emb = df["edge_embedding"].notna().to_numpy()
    df = df[has_emb]
    if df.empty:
        raise DataError(f"{path}: no decision carries an edge embedding (a switcher reads it)")
    k = len(classes)
    cloud = np.full((len(df), k), np.nan)
    for i, p in enumerate(df["cloud_proba"]):
        if p is not None:
            cloud[i] = p
    edge = ModelOutput(np.array([json.loads(p) if isinstance(p, str) else p
                                 for p in df["edge_proba"]], dtype=np.float32),
                       np.stack([np.frombuffer(b, "<f4") for b in df["edge_embedding"]]))
    return LoggedClips(edge, cloud, df["offloaded"].to_numpy().astype(bool),
                       df["shadow"].to_numpy().astype(bool), df["grp"].to_numpy().astype(str),
                       df["time"].to_numpy(dtype=float), tuple(classes), edge_model,
                       cloud_model, skipped=int((~has_emb).sum()))


def stratum_weights(offloaded: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """Per clip: `n_s / a_s` if answered (s its stratum, offloaded or kept), else 0.

    A stratum with logged clips but no answered one cannot be stood for: an error naming it.
    """
    offloaded, answered = np.asarray(offloaded, bool), np.asarray(answered, bool)
    w = np.zeros(len(offloaded))
    for name, stratum in (("offloaded", offloaded), ("kept", ~offloaded)):
        n, a = int(stratum.sum()), int((stratum & answered).sum())
        if n and not a:
            how = ("run classify with --shadow-rate (e.g. 0.1) so that a random share of the "
                   "kept clips is answered too") if name == "kept" else \
                "the cloud answered none of the offloaded clips"
            raise DataError(f"{n} {name} clips and none with a cloud answer: the sample cannot "
                            f"stand for them; {how}")
        if a:
            w[stratum & answered] = n / a
    return w


def replicate(weights: np.ndarray, per_min: int = 4) -> np.ndarray:
    """Row indices that repeat each weighted row about in proportion to its weight (the
    lightest `per_min` times), so any switcher family trains on the weighted sample without
    a sample-weight argument. Deterministic; the rounding error is at most 1 / (2 per_min)
    of the lightest weight."""
    w = np.asarray(weights, dtype=float)
    rows = np.flatnonzero(w > 0)
    if not len(rows):
        raise DataError("no weighted row to train on")
    copies = np.maximum(1, np.rint(per_min * w[rows] / w[rows].min())).astype(int)
    return np.repeat(rows, copies)


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """P(score of a positive > score of a negative), each pair weighted by w_i w_j, ties 1/2:
    whether a switcher's trust ranks the clips where edge and answer agree above the rest."""
    s = np.asarray(scores, dtype=float)
    pos = np.asarray(positive, bool)
    w = np.asarray(weights, dtype=float)
    wp, wn = w[pos].sum(), w[~pos].sum()
    if wp <= 0 or wn <= 0:
        raise DataError("the held-back clips hold only agreements or only disagreements with "
                        "the cloud: no ranking to compare")
    uniq, inv = np.unique(s, return_inverse=True)
    pos_w = np.bincount(inv, weights=np.where(pos, w, 0.0), minlength=len(uniq))
    neg_w = np.bincount(inv, weights=np.where(pos, 0.0, w), minlength=len(uniq))
    neg_below = np.concatenate([[0.0], np.cumsum(neg_w)[:-1]])
    return float(np.sum(pos_w * (neg_below + 0.5 * neg_w)) / (wp * wn))


def weighted_agreement_at(scores: np.ndarray, agree: np.ndarray, weights: np.ndarray,
                          rate: float) -> float:
    """The hybrid's agreement with the answer an offload gets (offloaded: 1 by definition;
    kept: edge == answer) when the lowest-scored `rate` of the weight is offloaded."""
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weights, dtype=float)
    a = np.asarray(agree, bool)
    order = np.argsort(s, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    off = np.zeros(len(s), bool)
    off[order[cum <= rate + 1e-12]] = True
    return float(np.sum(w * (off | a)) / w.sum())
