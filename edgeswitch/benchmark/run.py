"""`edgeswitch benchmark`: every router on every fold, resumable, then statistics and reports.

OUT/folds/foldXX/ holds each fold's model outputs (stage 1: training, the slow part) and its
figures (stage 2). Both carry a key of everything they depend on, so a rerun with the same
settings only reads them, a killed run resumes at the fold it was in, and a changed setting
recomputes exactly what it changes (switcher or fusion settings: stage 2 only).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

from edgeswitch import __version__
from edgeswitch.benchmark.evaluate import EVAL_VERSION, evaluate_fold
from edgeswitch.benchmark.folds import make_folds
from edgeswitch.benchmark.outputs import FoldOutputs, fold_outputs
from edgeswitch.benchmark.stats import summarise
from edgeswitch.config import RunConfig
from edgeswitch.data.clips import ClipBatch


def _key(*parts) -> str:
    src = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def default_router(cfg: RunConfig) -> str:
    """The router `demo` deploys under this config, by its benchmark name."""
    if cfg.stream.router == "belief" and cfg.streams != "none":
        return "belief"
    return "dmd+fusion" if cfg.fusion.method != "none" else "dmd"


def run_benchmark(cfg: RunConfig, out_dir: Path, cache_dir: Path | None = None,
                  progress: bool = True, data: ClipBatch | None = None) -> dict:
    from tqdm.auto import tqdm

    from edgeswitch.models.cache import fingerprint
    from edgeswitch.pipeline import run_data

    t0 = time.perf_counter()
    data = run_data(cfg, data)
    b = cfg.benchmark
    folds = make_folds(data, b.folds, b.repeats, cfg.seed, tuple(cfg.splits))
    data_key = fingerprint(data)
    out_dir = Path(out_dir)
    results, timings = [], {"train_and_outputs": 0.0, "evaluate": 0.0}
    bar = tqdm(folds, desc="benchmark", unit="fold", disable=not progress)
    for fold in bar:
        fdir = out_dir / "folds" / fold.name
        fdir.mkdir(parents=True, exist_ok=True)
        okey = _key(__version__, data_key, fold.to_dict(), asdict(cfg.edge), asdict(cfg.cloud),
                    b.abc_members, cfg.edge.rotate_deg, cfg.window_s, cfg.stride_s)
        rkey = _key(okey, EVAL_VERSION, asdict(cfg.switcher), asdict(cfg.fusion),
                    asdict(cfg.calibration), asdict(cfg.stream), cfg.streams)
        t = time.perf_counter()
        outputs_path, result_path = fdir / "outputs.npz", fdir / "result.json"
        bar.set_postfix_str(f"{fold.name}: models")
        outputs = None
        if outputs_path.exists() and _stored_key(fdir / "outputs.key") == okey:
            outputs = FoldOutputs.load(outputs_path)
        else:
            outputs = fold_outputs(cfg, fold, data, cache_dir, progress)
            outputs.save(outputs_path)
            (fdir / "outputs.key").write_text(okey)
        outputs.attach_streams(data)
        timings["train_and_outputs"] += time.perf_counter() - t
        t = time.perf_counter()
        bar.set_postfix_str(f"{fold.name}: routers")
        stored = _read_json(result_path)
        if stored is not None and stored.get("key") == rkey:
            res = stored["result"]
        else:
            res = {"test_groups": fold.test_groups, "seed": fold.seed, "repeat": fold.repeat,
                   "groups": fold.groups, "n_test": int(len(outputs["y_test"])),
                   **evaluate_fold(cfg, outputs, fold.seed)}
            tmp = result_path.with_name(result_path.name + ".tmp")
            tmp.write_text(json.dumps({"key": rkey, "result": res}))
            tmp.replace(result_path)
        timings["evaluate"] += time.perf_counter() - t
        results.append(res)
    bar.close()
    default = default_router(cfg)
    if default not in results[0]["routers"]:  # no streams to route: the per-clip switcher
        default = "dmd+fusion" if cfg.fusion.method != "none" else "dmd"
    summary = summarise(results, b.bootstrap, default, cfg.streams,
                        "+fusion" if cfg.fusion.method != "none" else "")
    return {"dataset": cfg.dataset, "classes": list(data.classes), "n_clips": len(data),
            "n_groups": int(len(set(data.groups.tolist()))), "folds": results,
            "summary": summary, "config": cfg.to_dict(),
            "timings_s": {k: round(v, 2) for k, v in timings.items()}
            | {"total": round(time.perf_counter() - t0, 2)}}


def _stored_key(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
