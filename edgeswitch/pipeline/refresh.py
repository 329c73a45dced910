"""Refresh a deployed switcher from the cloud answers its own decision log holds.

    edgeswitch refresh --log decisions.sqlite --bundle runs/demo --out runs/refreshed

1. Read the log (read-only) and split it by time: the latest `holdout` share is held back.
2. Train a new switcher of the bundle's own spec (family, target, features; rotated views are
   not possible, the log holds no clips) on the earlier part's answered clips, each weighted by
   post-stratification (pipeline/logged.py: offloaded clips ~1, shadow clips ~1 / shadow
   rate), applied by replicating rows in proportion to their weights. The target is the DMD
   target against the answer an offload gets (the bundle's fusion of edge and cloud, or the
   cloud's), exactly as `train-switcher` builds it. No label is read.
3. Compare old and new on the held-back clips, label-free, with the same weights computed on
   that part: `auroc` (weighted AUROC of the trust score for edge/answer agreement) or
   `agreement` (the hybrid's weighted agreement with the answer at the operating point's
   offload rate). A paired bootstrap over the held-back answered clips gives a 95% interval
   of new - old; the decision uses the point estimate: new is better when new - old > margin.
4. Recalibrate the operating point for the new switcher on the scores of every logged clip
   (no cloud answer needed): the same mode and target rate (offload, budget; a budget point
   keeps its rate, rounded down), adaptive as before. A disagreement point is refused (its
   guarantee needs a fresh calibration set: run `calibrate`).
5. Only when better: write NEWDIR, a full copy of the bundle (edge.onnx, cloud.onnx,
   fusion.json) with the new switcher.npz, operating_point.json and refresh.json (the report),
   written to a temporary folder first and renamed, so NEWDIR is whole or absent.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgeswitch.config import RefreshConfig
from edgeswitch.errors import DataError
from edgeswitch.pipeline.logged import (
    LoggedClips,
    read_log,
    replicate,
    stratum_weights,
    weighted_agreement_at,
    weighted_auroc,
)
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.calibrate import OperatingPoint, calibrate_offload
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.select import SwitcherSpec, dmd_targets, fit_switcher

BUNDLE_COPIED = ("edge.onnx", "cloud.onnx", "fusion.json")  # copied as they are
BOOTSTRAP = 500


@dataclass(frozen=True)
class Bundle:
    """A deployed bundle folder: what `demo` or `save_bundle` writes."""

    path: Path
    switcher: Switcher
    operating_point: OperatingPoint
    fusion: Fusion | None
    edge_model: str  # model_identity of edge.onnx

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        from edgeswitch.models import OnnxClassifier
        from edgeswitch.models.base import model_identity
        from edgeswitch.switcher import load_switcher

        path = Path(path)
        if not path.is_dir():
            raise DataError(f"bundle folder not found: {path}")
        for name in ("edge.onnx", "switcher.npz", "operating_point.json"):
            if not (path / name).is_file():
                raise DataError(f"{path} is not a bundle: no {name}")
        edge = OnnxClassifier(path / "edge.onnx")
        sw = load_switcher(path / "switcher.npz")
        sw.check_edge(edge)
        fusion = Fusion.load(path / "fusion.json") if (path / "fusion.json").is_file() else None
        return cls(path, sw, OperatingPoint.load(path / "operating_point.json"), fusion,
                   model_identity(edge))


@dataclass
class RefreshResult:
    switcher: Switcher
    operating_point: OperatingPoint
    better: bool
    report: dict


def answer_proba(clips: LoggedClips, fusion: Fusion | None) -> np.ndarray:
    """What an offloaded clip is answered with (NaN rows where the cloud gave nothing)."""
    if fusion is None:
        return clips.cloud_proba
    out = np.full_like(clips.cloud_proba, np.nan)
    a = clips.answered
    if a.any():
        out[a] = fusion.combine(clips.edge.proba[a], clips.cloud_proba[a])
    return out


def spec_of(sw: Switcher) -> SwitcherSpec:
    """The spec the bundle's switcher was trained with (its meta), without rotated views."""
    spec = sw.meta.get("spec")
    if not spec:
        return SwitcherSpec(sw.family, sw.target, tuple(sw.features))
    known = {k: v for k, v in spec.items() if k in SwitcherSpec.__dataclass_fields__}
    return replace(SwitcherSpec(**(known | {"features": tuple(known["features"])})),
                   augment_views=0)


def train_on_log(clips: LoggedClips, bundle: Bundle, seed: int = 0,
                 weighted: bool = True) -> Switcher:
    """The bundle's switcher spec fitted on the weighted answered clips of `clips`
    (`weighted=False`: every answered clip once, the biased sample as it is; an ablation)."""
    w = stratum_weights(clips.offloaded, clips.answered) if weighted else \
        clips.answered.astype(float)
    rows = replicate(w)
    answer = answer_proba(clips, bundle.fusion)
    spec = spec_of(bundle.switcher)
    from edgeswitch.models.base import ModelOutput

    edge = ModelOutput(clips.edge.proba[rows], clips.edge.embedding[rows])
    target = dmd_targets(edge.proba, answer[rows], spec.target)
    return fit_switcher(spec, edge, target, clips.groups[rows], seed, "dmd",
                        {"edge_model": clips.edge_model, "cloud_model": clips.cloud_model,
                         "refreshed_from": f"{int(clips.answered.sum())} logged cloud answers"})


def criterion(name: str, scores: np.ndarray, agree: np.ndarray, w: np.ndarray,
              rate: float) -> float:
    if name == "auroc":
        return weighted_auroc(scores, agree, w)
    if name == "agreement":
        return weighted_agreement_at(scores, agree, w, rate)
    raise DataError(f"unknown refresh criterion {name!r}; use auroc or agreement")


def compare(old: Switcher, new: Switcher, held: LoggedClips, fusion: Fusion | None,
            rate: float, which: str, seed: int = 0) -> dict:
    """Both criteria for old and new on the held-back clips, and a paired bootstrap of the
    chosen one's difference (resampling the answered held-back clips)."""
    w = stratum_weights(held.offloaded, held.answered)
    a = held.answered
    agree = held.edge.label[a] == answer_proba(held, fusion)[a].argmax(axis=1)
    w = w[a]
    scores = {"old": old.trust(held.edge)[a], "new": new.trust(held.edge)[a]}
    out: dict = {}
    for name in ("auroc", "agreement"):
        out[name] = {k: criterion(name, s, agree, w, rate) for k, s in scores.items()}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(w), len(w))
        try:
            diffs.append(criterion(which, scores["new"][i], agree[i], w[i], rate)
                         - criterion(which, scores["old"][i], agree[i], w[i], rate))
        except DataError:  # a resample with one kind of clip only
            continue
    out["difference"] = out[which]["new"] - out[which]["old"]
    out["difference_ci95"] = [float(v) for v in np.percentile(diffs, [2.5, 97.5])] \
        if diffs else None
    out["clips"] = {"held_back": len(held), "answered": int(a.sum()),
                    "shadow_answered": int((a & held.shadow).sum()),
                    "agreement_weighted": float(np.sum(w * agree) / w.sum())}
    return out


def recalibrate(op: OperatingPoint, scores: np.ndarray) -> OperatingPoint:
    """The same kind of operating point for the new switcher, on these scores."""
    if op.mode == "disagreement":
        raise DataError("refresh recalibrates offload and budget operating points; a "
                        "disagreement point's guarantee needs a fresh calibration set (run "
                        "`edgeswitch calibrate` on the new switcher)")
    rate = op.target_rate if op.target_rate is not None else op.calib_offload_rate
    fresh = calibrate_offload(scores, rate, op.adaptive, op.params.get("step", 0.01),
                              round_down=op.mode == "budget")
    return OperatingPoint(op.mode, fresh.threshold, fresh.calib_offload_rate,
                          op.params | fresh.params | {"refreshed_on": len(scores)},
                          adaptive=op.adaptive)


def check_shadow(part: LoggedClips, name: str, least: int) -> None:
    n = int((part.shadow & part.answered).sum())
    if n < least:
        raise DataError(f"the {name} part of the log has {n} shadow clips with a cloud answer, "
                        f"fewer than min_shadow {least}: too few random clips to stand for the "
                        "kept ones; log longer or with a higher --shadow-rate")


def refresh(log_path: str | Path, bundle: Bundle, cfg: RefreshConfig,
            seed: int = 0) -> RefreshResult:
    """Train, compare and recalibrate (the module docstring); writes nothing."""
    clips = read_log(log_path)
    if clips.edge_model and bundle.edge_model and clips.edge_model != bundle.edge_model:
        raise DataError(f"{log_path} logs edge model {clips.edge_model}; the bundle's is "
                        f"{bundle.edge_model}: refresh needs the log of this bundle's edge")
    train, held = clips.split_by_time(cfg.holdout)
    check_shadow(train, "earlier", cfg.min_shadow)
    check_shadow(held, "held-back", cfg.min_shadow)
    new = train_on_log(train, bundle, seed)
    op = bundle.operating_point
    rate = op.target_rate if op.target_rate is not None else op.calib_offload_rate
    cmp = compare(bundle.switcher, new, held, bundle.fusion, rate, cfg.criterion, seed)
    new_op = recalibrate(op, new.trust(clips.edge))
    better = bool(cmp["difference"] > cfg.margin)
    report = {
        "log": str(log_path), "bundle": str(bundle.path), "better": better,
        "criterion": cfg.criterion, "margin": cfg.margin, "offload_rate": rate,
        **cmp,
        "train": {"clips": len(train), "answered": int(train.answered.sum()),
                  "offloaded_answered": int((train.answered & train.offloaded).sum()),
                  "shadow_answered": int((train.answered & train.shadow).sum()),
                  "weights": weight_summary(train)},
        "skipped_without_embedding": clips.skipped,
        "switcher": spec_of(bundle.switcher).label(),
        "operating_point": {"old": op.to_dict() | {"params": _short(op.params)},
                            "new": new_op.to_dict() | {"params": _short(new_op.params)}},
        "config": asdict(cfg),
    }
    return RefreshResult(new, new_op, better, report)


def weight_summary(part: LoggedClips) -> dict:
    w = stratum_weights(part.offloaded, part.answered)
    return {"offloaded": float(w[part.offloaded & part.answered].max(initial=0.0)),
            "kept": float(w[~part.offloaded & part.answered].max(initial=0.0))}


def _short(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "calib_quantiles"}


def write_bundle(result: RefreshResult, bundle: Bundle, out_dir: str | Path) -> Path:
    """NEWDIR: the bundle's models and fusion, the new switcher and operating point, and the
    report; built in a temporary sibling folder and renamed (whole or absent)."""
    import tempfile

    out = Path(out_dir)
    if out.resolve() == bundle.path.resolve():
        raise DataError("--out must be a new folder, not the bundle itself")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} exists and is not an empty folder; give a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in BUNDLE_COPIED:
            if (bundle.path / name).is_file():
                shutil.copy2(bundle.path / name, tmp / name)
        result.switcher.save(tmp / "switcher.npz")
        result.operating_point.save(tmp / "operating_point.json")
        (tmp / "refresh.json").write_text(json.dumps(result.report, indent=1))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
