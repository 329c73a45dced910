"""Choose the switcher threshold on unlabelled calibration clips.

The hybrid offloads a clip when its switcher score is below the threshold. Three ways to pick it:

* `offload`: a target share of clips sent to the cloud.
* `budget`: a compute budget per clip relative to cloud-only; the edge and switcher always
  run, so the offload share is what the budget leaves after them.
  Both can be `adaptive`: at run time a `RateController` keeps the share on the live stream
  (another user's scores sit elsewhere than the calibration users').
* `disagreement`: the least offload for which, with probability at least 1 - delta over the
  draw of the calibration set, the rate of edge/cloud disagreement among kept clips is at most
  epsilon. Each candidate threshold of a fixed grid gets a one-sided Clopper-Pearson upper
  bound at level delta/m (Bonferroni over the m candidates), so the chosen threshold is covered
  whatever the data. See docs/method.md for the exact statement.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.switcher.files import load_json

MODES = ("offload", "budget", "disagreement")


@dataclass(frozen=True)
class OperatingPoint:
    mode: str
    threshold: float             # offload when score < threshold (inf: offload everything)
    calib_offload_rate: float    # share of calibration clips offloaded at this threshold
    params: dict = field(default_factory=dict)
    certified: bool | None = None  # disagreement mode: did some threshold pass the test?
    adaptive: bool = False         # offload/budget: follow the rate on the live stream
    # the calibration data's drift reference (runtime.drift); None: written before it existed
    reference: dict | None = None

    def __post_init__(self) -> None:
        """Refuse a point the hybrid could not use, naming the field (a hand-edited file or a
        caller's typo must fail here, not as a wrong offload share later)."""
        if self.mode not in MODES:
            raise DataError(f"operating point 'mode' must be one of {list(MODES)}, "
                            f"got {self.mode!r}")
        threshold = _number("threshold", self.threshold)
        if np.isnan(threshold):  # +-inf are legitimate: offload every clip / none
            raise DataError("operating point 'threshold' must be a number or +-inf, got NaN")
        rate = _number("calib_offload_rate", self.calib_offload_rate)
        if not 0.0 <= rate <= 1.0:
            raise DataError(f"operating point 'calib_offload_rate' must be within [0, 1], "
                            f"got {self.calib_offload_rate!r}")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "calib_offload_rate", rate)
        if not isinstance(self.params, dict):
            raise DataError(f"operating point 'params' must be an object, got "
                            f"{type(self.params).__name__}")
        if self.certified is not None and not isinstance(self.certified, bool | np.bool_):
            raise DataError(f"operating point 'certified' must be true, false or null, got "
                            f"{self.certified!r}")
        if not isinstance(self.adaptive, bool | np.bool_):
            raise DataError(f"operating point 'adaptive' must be true or false, got "
                            f"{self.adaptive!r}")
        if self.reference is not None and not isinstance(self.reference, dict):
            raise DataError(f"operating point 'reference' must be an object or null, got "
                            f"{type(self.reference).__name__}")
        if "rate" in self.params:
            target = _number("params.rate", self.params["rate"])
            if not 0.0 <= target <= 1.0:
                raise DataError(f"operating point 'params.rate' must be within [0, 1], got "
                                f"{self.params['rate']!r}")
        if "step" in self.params and not _number("params.step", self.params["step"]) > 0:
            raise DataError(f"operating point 'params.step' must be positive, got "
                            f"{self.params['step']!r}")
        if self.adaptive:
            if self.mode == "disagreement":
                raise DataError("operating point: a 'disagreement' point cannot be adaptive "
                                "(its guarantee holds for its fixed threshold)")
            missing = [k for k in ("rate", "calib_quantiles") if k not in self.params]
            if missing:
                raise DataError(f"adaptive operating point lacks 'params.{missing[0]}'")
            q = self.params["calib_quantiles"]
            try:
                q = np.asarray(q, dtype=float)
            except (TypeError, ValueError):
                q = np.asarray([np.nan])
            if q.ndim != 1 or len(q) < 2 or not np.isfinite(q).all() or (np.diff(q) < 0).any():
                raise DataError("operating point 'params.calib_quantiles' must be at least two "
                                "finite, non-decreasing numbers")

    def offload(self, scores: np.ndarray) -> np.ndarray:
        """Fixed-threshold decisions (for an adaptive point: those of its initial threshold)."""
        return np.asarray(scores) < self.threshold

    @property
    def target_rate(self) -> float | None:
        return self.params.get("rate")

    def controller(self, step: float | None = None) -> RateController:
        """A fresh rate controller, in rank space of the calibration scores. The step is the
        one stored at calibration unless given."""
        if not self.adaptive or self.target_rate is None:
            raise DataError(f"operating point '{self.mode}' is not adaptive")
        step = self.params.get("step", 0.01) if step is None else step
        return RateController(self.target_rate, self.params["calib_quantiles"], step)

    def to_dict(self) -> dict:
        """JSON-safe: an infinite threshold (offload all / none) becomes "inf" / "-inf"."""
        d = asdict(self)
        t = float(self.threshold)
        d["threshold"] = t if np.isfinite(t) else ("inf" if t > 0 else "-inf")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> OperatingPoint:
        """The inverse of `to_dict` ("inf" / "-inf" thresholds read back); every field is
        checked by the constructor, and a missing one is named."""
        if not isinstance(d, dict):
            raise DataError(f"operating point must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("mode", "threshold", "calib_offload_rate") if k not in d]
        if missing:
            raise DataError(f"operating point lacks {missing[0]!r}")
        d = dict(d)
        if d["threshold"] in ("inf", "-inf"):
            d["threshold"] = float(d["threshold"])
        known = {"mode", "threshold", "calib_offload_rate", "params", "certified", "adaptive",
                 "reference"}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> OperatingPoint:
        """Read an operating point written by `edgeswitch calibrate` (JSON); an error names the
        file and the key."""
        return load_json(path, "operating point", cls.from_dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _number(key: str, value) -> float:
    """A real number (+-inf and NaN included; the caller decides), not a bool or a string."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise DataError(f"operating point {key!r} must be a number, got {value!r}")
    return float(value)


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) == 0:
        raise DataError("calibration needs at least one clip")
    if not np.isfinite(s).all():
        raise DataError("calibration scores contain NaN or inf")
    return s


def threshold_for_rate(scores: np.ndarray, rate: float, round_down: bool = False) -> float:
    """Threshold that offloads the `ceil(rate * n)` lowest of these scores (`floor` with
    `round_down`, so that a budget is never overrun); fewer when scores tie at the cut."""
    s = np.sort(_scores(scores))
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"offload rate must be within [0, 1], got {rate}")
    k = int(np.floor(rate * len(s) + 1e-9)) if round_down else int(np.ceil(rate * len(s) - 1e-9))
    if k >= len(s):
        return np.inf
    if k == 0:
        return -np.inf
    return float(s[k])  # offload is `score < threshold`: a tie at s[k] stays on the edge


def calibrate_offload(scores: np.ndarray, rate: float, adaptive: bool = False,
                      step: float = 0.01, round_down: bool = False) -> OperatingPoint:
    s = _scores(scores)
    t = threshold_for_rate(s, rate, round_down)
    params: dict = {"rate": rate}
    if adaptive:  # the controller ranks live scores against these
        params["calib_quantiles"] = np.quantile(s, np.linspace(0, 1, 201)).tolist()
        params["step"] = step
    return OperatingPoint("offload", t, float(np.mean(s < t)), params, adaptive=adaptive)


def calibrate_stream(router, edge, cloud: np.ndarray, answer: np.ndarray, streams,
                     rate: float, adaptive: bool = False, step: float = 0.01,
                     round_down: bool = False) -> tuple[OperatingPoint, np.ndarray]:
    """The threshold at which a stream router, run over unlabelled calibration streams with the
    cloud answering what it offloads (`cloud`; `answer`: what an offloaded clip gets), offloads
    `rate` of the clips: the least threshold reaching it (the greatest staying under it with
    `round_down`). A decision changes later states, so each candidate threshold is its own run.
    Returns the point and the trust of every calibration clip in the run at its threshold
    (the scores an adaptive point ranks live scores against, and the drift reference's)."""
    (found,) = stream_thresholds(router, edge, cloud, answer, streams, [rate], round_down)
    return stream_point(router, rate, found, adaptive, step)


def stream_point(router, rate: float, found: tuple[float, float, np.ndarray],
                 adaptive: bool = False, step: float = 0.01) -> tuple[OperatingPoint, np.ndarray]:
    """`calibrate_stream`'s point from what `threshold_search` found for `rate`."""
    t, reached, scores = found
    params: dict = {"rate": rate, "router": getattr(router, "name", "router")}
    if adaptive:  # the controller ranks live scores against the run's own
        params["calib_quantiles"] = np.quantile(scores, np.linspace(0, 1, 201)).tolist()
        params["step"] = step
    return OperatingPoint("offload", t, reached, params, adaptive=adaptive), scores


def stream_thresholds(router, edge, cloud: np.ndarray, answer: np.ndarray, streams,
                      rates, round_down: bool = False) -> list[tuple[float, float, np.ndarray]]:
    """For each offload rate of `rates`, as `calibrate_stream` picks it: (threshold, the
    offload it gives, every clip's trust in that run); see `threshold_search`."""
    from edgeswitch.switcher.sweep import run_searches

    search = threshold_search(rates, round_down)
    return run_searches(router, (), [(edge, cloud, answer)], [(0, streams, search)])[0]


def threshold_search(rates, round_down: bool = False):
    """`stream_thresholds`' search (a switcher.sweep.Search: it yields thresholds to run and is
    sent each clip's offload and trust in those runs). Each rate brackets its target on a grid
    and looks closer inside the bracket; the grids of all rates run side by side, as rows of
    one run (a row's run does not depend on the others), so many rates cost about what one
    does."""
    for rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise DataError(f"offload rate must be within [0, 1], got {rate}")
    known: dict[float, tuple[float, np.ndarray]] = {}

    def todo(grids: list[np.ndarray]) -> np.ndarray:
        """Every threshold of `grids` not run yet."""
        if not grids:
            return np.zeros(0)
        new = np.unique(np.concatenate(grids))
        return new[[float(x) not in known for x in new]]

    _, _, trust0 = yield np.asarray([-np.inf])
    first = np.unique(np.concatenate([[-np.inf, np.inf],
                                      np.quantile(trust0[0], np.linspace(0, 1, 33))]))
    grids = [first] * len(rates)
    open_ = list(range(len(rates)))
    for last in (False, False, False, True):  # bracket each target, then look closer inside
        new = todo([grids[i] for i in open_] if not last else grids)
        if len(new):
            off, _, trust = yield new
            known.update({float(x): (float(off[i].mean()), trust[i]) for i, x in enumerate(new)})
        if last:
            break
        still = []
        for i in open_:
            grid, rate = grids[i], rates[i]
            got = np.asarray([known[float(x)][0] for x in grid])
            hi = int(np.argmax(got >= rate - 1e-12)) if (got >= rate - 1e-12).any() \
                else len(grid) - 1
            lo = max(hi - 1, 0)
            if not (np.isfinite(grid[lo]) and np.isfinite(grid[hi])) or hi == lo:
                continue
            grids[i] = np.unique(np.concatenate([grid[:lo], np.linspace(grid[lo], grid[hi],
                                                                          17), grid[hi + 1:]]))
            still.append(i)
        open_ = still
    out = []
    for grid, rate in zip(grids, rates, strict=True):
        got = np.asarray([known[float(x)][0] for x in grid])
        ok = got <= rate + 1e-12 if round_down else got >= rate - 1e-12
        pick = (int(np.nonzero(ok)[0][-1]) if ok.any() else 0) if round_down else \
            (int(np.nonzero(ok)[0][0]) if ok.any() else len(grid) - 1)
        t = float(grid[pick])
        out.append((t, known[t][0], known[t][1]))
    return out


def calibrate_budget(scores: np.ndarray, budget: float, edge_cost: float, switcher_cost: float,
                     cloud_cost: float, adaptive: bool = False,
                     step: float = 0.01) -> OperatingPoint:
    """`budget` is the allowed cost per clip as a fraction of cloud-only (e.g. 0.5)."""
    if cloud_cost <= 0:
        raise DataError("cloud cost must be positive")
    fixed = (edge_cost + switcher_cost) / cloud_cost
    rate = budget - fixed
    if rate < 0:
        raise DataError(f"budget {budget:.3f} x cloud is below the edge + switcher cost alone "
                        f"({fixed:.3f} x cloud)")
    op = calibrate_offload(scores, min(rate, 1.0), adaptive, step, round_down=True)
    return OperatingPoint("budget", op.threshold, op.calib_offload_rate,
                          op.params | {"budget": budget, "edge_cost": edge_cost,
                                       "switcher_cost": switcher_cost, "cloud_cost": cloud_cost},
                          adaptive=adaptive)


def clopper_pearson_upper(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) upper confidence bound on a binomial rate, k successes of n."""
    from scipy.stats import beta

    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ub = beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-12))
    return np.where(n == 0, 1.0, np.where(k >= n, 1.0, ub))


def calibrate_disagreement(scores: np.ndarray, disagree: np.ndarray, epsilon: float,
                           delta: float, grid: np.ndarray | None = None) -> OperatingPoint:
    """Least offload whose kept-clip disagreement rate is <= epsilon with prob. >= 1 - delta.

    grid: candidate thresholds, fixed before looking at these calibration clips (e.g. quantiles
    of the switcher's scores on the DMD pool). Default: 50 evenly spaced values in [0, 1].
    """
    s = _scores(scores)
    d = np.asarray(disagree, dtype=bool).reshape(-1)
    if d.shape != s.shape:
        raise DataError(f"disagree has {len(d)} entries for {len(s)} scores")
    if not (0 < epsilon < 1 and 0 < delta < 1):
        raise DataError(f"epsilon and delta must be within (0, 1), got {epsilon}, {delta}")
    cand = np.linspace(0, 1, 50) if grid is None else np.asarray(grid, dtype=float).reshape(-1)
    if len(cand) == 0 or not np.isfinite(cand).all():
        raise DataError("disagreement calibration needs a non-empty grid of finite thresholds")
    # "offload nothing" is always a candidate: switcher scores lie in [0, 1], so a grid point
    # <= 0 already is one; otherwise -inf is added (and counts in the Bonferroni correction)
    cand = np.unique(cand if cand.min() <= 0 else np.concatenate([[-np.inf], cand]))
    kept = s[None, :] >= cand[:, None]                  # [m, n]
    n_kept = kept.sum(axis=1)
    k_dis = (kept & d[None, :]).sum(axis=1)
    ucb = clopper_pearson_upper(k_dis, n_kept, delta / len(cand))
    ok = (ucb <= epsilon) & (n_kept > 0)
    # the least epsilon this calibration set could certify (with some clip kept)
    smallest = float(ucb[n_kept > 0].min()) if (n_kept > 0).any() else None
    params = {"epsilon": epsilon, "delta": delta, "grid_size": int(len(cand)),
              "smallest_certifiable_epsilon": smallest}
    if not ok.any():
        return OperatingPoint("disagreement", np.inf, 1.0, params | {"ucb": None}, False)
    best = int(np.argmax(np.where(ok, n_kept, -1)))   # most kept clips = least offload
    t = float(cand[best])
    return OperatingPoint("disagreement", t, float(np.mean(s < t)),
                          params | {"ucb": float(ucb[best]),
                                    "calib_disagreement": float(k_dis[best] / n_kept[best])},
                          True)


def certification_warning(op: OperatingPoint) -> str | None:
    """What to tell the user when a disagreement operating point certified nothing."""
    if op.mode != "disagreement" or op.certified is not False:
        return None
    eps, smallest = op.params.get("epsilon"), op.params.get("smallest_certifiable_epsilon")
    best = "no epsilon below 1" if smallest is None or smallest >= 1 else \
        f"the smallest epsilon it could certify is {smallest:.3f}"
    return (f"warning: no threshold keeps edge/cloud disagreement <= {eps} with probability "
            f">= 1 - {op.params.get('delta')} on these calibration clips, so every clip is "
            f"offloaded (cost above cloud-only); {best}")


class RateController:
    """Holds the offload share at `rate` on the stream the hybrid actually sees.

    A threshold calibrated on some users offloads a different share for other users (their
    switcher scores sit higher or lower). The controller works in rank space: a score becomes
    its quantile `u` among the calibration scores, and the clip is offloaded when `u` is below
    a level that starts at `rate` and moves by `step * (rate - offloaded)` after each clip
    (online quantile tracking, as in adaptive conformal inference, Gibbs & Candes 2021). A hard
    cap never lets the running share exceed `rate`; a clip the cap refuses moves nothing (no
    wind-up). The updates telescope: after n clips, `capped` of them refused by the cap,
    offloaded / n = rate * (1 - capped / n) - (level_n - level_0) / (n * step), whatever the
    stream. A step is a share of the calibration population, whatever the scale of the scores.
    It reads scores only, never labels.
    """

    def __init__(self, rate: float, calib_quantiles: np.ndarray, step: float = 0.01) -> None:
        if not 0.0 <= rate <= 1.0:
            raise DataError(f"offload rate must be within [0, 1], got {rate}")
        if step <= 0:
            raise DataError(f"controller step must be positive, got {step}")
        q = np.asarray(calib_quantiles, dtype=float)
        if q.ndim != 1 or len(q) < 2 or np.any(np.diff(q) < 0):
            raise DataError("controller needs increasing calibration score quantiles")
        self.rate = rate
        self.step = step
        # tied knots (a saturated switcher) get the middle of their levels: a tied score then
        # ranks mid-tie, not at its top
        levels = np.linspace(0.0, 1.0, len(q))
        self.knots, first = np.unique(q, return_index=True)
        last = len(q) - 1 - np.unique(q[::-1], return_index=True)[1]
        self.levels = (levels[first] + levels[last]) / 2
        self.level = rate
        self.seen = 0
        self.offloaded = 0
        self.capped = 0

    def rank(self, scores: np.ndarray) -> np.ndarray:
        """Quantile of each score among the calibration scores (0..1; mid-rank on ties)."""
        if len(self.knots) == 1:
            return np.where(scores < self.knots[0], 0.0,
                            np.where(scores > self.knots[0], 1.0, 0.5))
        return np.interp(scores, self.knots, self.levels)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Offload decisions for the next clips, in stream order (each uses only the past)."""
        u = self.rank(np.asarray(scores, dtype=float))
        out = np.zeros(len(u), dtype=bool)
        for i, ui in enumerate(u):
            self.seen += 1
            want = ui < self.level
            capped = want and self.offloaded + 1 > self.rate * self.seen + 1e-9
            hit = want and not capped
            out[i] = hit
            self.offloaded += int(hit)
            self.capped += int(capped)
            if not capped:  # no wind-up: the cap, not the level, refused this clip
                self.level += self.step * (self.rate - float(hit))
        return out
