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
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from edgeswitch import __version__
from edgeswitch.benchmark.evaluate import (
    EVAL_VERSION,
    evaluate_fold,
    evaluate_task,
    fold_tasks,
    merge_tasks,
)
from edgeswitch.benchmark.folds import Fold, make_folds
from edgeswitch.benchmark.outputs import FoldOutputs, fold_outputs
from edgeswitch.benchmark.recorded import RecordedOutputs, write_outputs_file
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
                  progress: bool = True, data: ClipBatch | None = None,
                  recorded: RecordedOutputs | None = None,
                  write_outputs: Path | None = None) -> dict:
    """Every router on every fold: on clips (`data`, or the config's data set), training each
    fold's models, or on `recorded` outputs, training nothing. `write_outputs` writes every
    fold's model outputs as one outputs file (benchmark.recorded) after a run on clips."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    b = cfg.benchmark
    if recorded is not None:
        source = _Recorded(recorded, cfg)
    else:
        source = _Clips(cfg, data, cache_dir, progress)
    folds = source.folds()
    out_dir = Path(out_dir)
    results: dict[int, dict] = {}
    todo, written, timings = [], [], {"train_and_outputs": 0.0, "evaluate": 0.0}
    bar = tqdm(folds, desc="benchmark: models", unit="fold", disable=not progress)
    for fold in bar:  # stage 1, in order: a fold's models train with every core
        fdir = out_dir / "folds" / fold.name
        fdir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        bar.set_postfix_str(fold.name)
        outputs, okey = source.outputs(fold, fdir)
        rkey = _key(okey, EVAL_VERSION, asdict(cfg.switcher), asdict(cfg.fusion),
                    asdict(cfg.calibration), asdict(cfg.stream), cfg.streams)
        timings["train_and_outputs"] += time.perf_counter() - t
        if write_outputs is not None:
            written.append((fold, outputs))
        stored = _read_json(fdir / "result.json")
        if stored is not None and stored.get("key") == rkey:
            results[fold.index] = stored["result"]
        else:
            todo.append((fold, outputs, fdir / "result.json", rkey))
    bar.close()
    t = time.perf_counter()
    for fold, res in _evaluate_folds(cfg, todo, progress):  # stage 2: folds side by side
        results[fold.index] = res
    timings["evaluate"] += time.perf_counter() - t
    results = [results[f.index] for f in folds]
    if write_outputs is not None:
        write_outputs_file(write_outputs, written, cfg)
    default = default_router(cfg)
    if default not in results[0]["routers"]:  # no streams to route: the per-clip switcher
        default = "dmd+fusion" if cfg.fusion.method != "none" else "dmd"
    summary = summarise(results, b.bootstrap, default, source.streams,
                        "+fusion" if cfg.fusion.method != "none" else "")
    return {"dataset": source.name, "classes": list(source.classes),
            "n_clips": source.n_clips, "n_groups": source.n_groups, "folds": results,
            "summary": summary, "cost_unit": source.cost_unit, "config": cfg.to_dict(),
            "timings_s": {k: round(v, 2) for k, v in timings.items()}
            | {"total": round(time.perf_counter() - t0, 2)}}


class _Clips:
    """Folds of a clip data set: each fold's models trained (cached) and run on its splits;
    the outputs saved per fold, so a rerun or a killed run only evaluates."""

    cost_unit = "macs"

    def __init__(self, cfg: RunConfig, data: ClipBatch | None, cache_dir: Path | None,
                 progress: bool) -> None:
        from edgeswitch.models.cache import fingerprint
        from edgeswitch.pipeline import run_data

        self.cfg, self.cache_dir, self.progress = cfg, cache_dir, progress
        self.data = run_data(cfg, data)
        self.data_key = fingerprint(self.data)
        self.name, self.classes, self.streams = cfg.dataset, self.data.classes, cfg.streams
        self.n_clips = len(self.data)
        self.n_groups = int(len(set(self.data.groups.tolist())))

    def folds(self) -> list[Fold]:
        b = self.cfg.benchmark
        return make_folds(self.data, b.folds, b.repeats, self.cfg.seed, tuple(self.cfg.splits))

    def outputs(self, fold: Fold, fdir: Path) -> tuple[FoldOutputs, str]:
        cfg = self.cfg
        okey = _key(__version__, self.data_key, fold.to_dict(), asdict(cfg.edge),
                    asdict(cfg.cloud), cfg.benchmark.abc_members, cfg.edge.rotate_deg,
                    cfg.window_s, cfg.stride_s)
        path = fdir / "outputs.npz"
        if path.exists() and _stored_key(fdir / "outputs.key") == okey:
            outputs = FoldOutputs.load(path)
        else:
            outputs = fold_outputs(cfg, fold, self.data, self.cache_dir, self.progress)
            outputs.save(path)
            (fdir / "outputs.key").write_text(okey)
        return outputs.attach_streams(self.data), okey


class _Recorded:
    """Folds of a recorded outputs file: nothing to train, each fold cut from its rows."""

    def __init__(self, recorded: RecordedOutputs, cfg: RunConfig) -> None:
        self.rec, self.cfg = recorded, cfg
        self.name, self.classes = recorded.name, recorded.classes
        self.streams = "none" if cfg.streams == "none" else recorded.stream_kind
        rows = recorded.part != "aug" if recorded.part is not None else slice(None)
        self.n_clips = int(len(set(recorded.ids[rows].tolist())))
        self.n_groups = int(len(set(recorded.groups[rows].tolist())))
        self.cost_unit = None if recorded.costs is None else recorded.costs["unit"]

    def folds(self) -> list[Fold]:
        b = self.cfg.benchmark
        return self.rec.folds(b.folds, b.repeats, self.cfg.seed, tuple(self.cfg.splits))

    def outputs(self, fold: Fold, fdir: Path) -> tuple[FoldOutputs, str]:
        okey = _key(__version__, self.rec.digest, fold.to_dict(), self.cfg.streams)
        return self.rec.fold_outputs(fold, with_streams=self.cfg.streams != "none"), okey


def _evaluate_folds(cfg: RunConfig, todo: list, progress: bool):
    """Each fold of `todo` scored (benchmark.evaluate) and its result.json written, as they
    finish: `cfg.benchmark.processes` at once, each in a fresh process with one thread (the
    figures do not depend on it: every fold is seeded). With processes, each fold goes out as
    its tasks (`fold_tasks`), the costliest kind first for every fold, so the processes end
    close together (five folds on two processes would otherwise take three rounds)."""
    import os
    from concurrent.futures import as_completed

    from tqdm.auto import tqdm

    n = cfg.benchmark.processes or os.cpu_count() or 1
    n = min(n, len(todo) * len(fold_tasks(cfg)))
    bar = tqdm(total=len(todo), desc="benchmark: routers", unit="fold", disable=not progress)
    if n <= 1:
        for fold, outputs, path, rkey in todo:
            yield fold, _store(fold, outputs, path, rkey,
                               evaluate_fold(cfg, outputs, fold.seed))
            bar.update()
    else:
        with worker_pool(n) as pool:
            futures = {pool.submit(evaluate_task, cfg, item[1], item[0].seed, task): (item, task)
                       for task in fold_tasks(cfg) for item in todo}
            parts: dict[int, dict[str, dict]] = {}
            for fut in as_completed(futures):
                (fold, outputs, path, rkey), task = futures[fut]
                done = parts.setdefault(fold.index, {})
                done[task] = fut.result()
                if len(done) == len(fold_tasks(cfg)):
                    yield fold, _store(fold, outputs, path, rkey,
                                       merge_tasks(cfg, parts.pop(fold.index)))
                    bar.update()
    bar.close()


# Thread pools a worker's libraries size from the environment when they load: numpy's and
# scipy's OpenBLAS, scikit-learn's OpenMP. Left at one thread per core, each worker's small BLAS
# calls (L-BFGS-B steps, switcher products) hand work to threads that wait for a core the other
# worker holds: a per-clip task took 1.3-1.6x the CPU. The figures are the same with one thread
# (checked bit for bit).
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def worker_pool(n: int):
    """`n` stage-2 worker processes with one thread in every pool (torch's, BLAS's, OpenMP's).
    The parent's environment says one thread for as long as the pool is open: a spawned
    process reads it before it imports numpy, and the executor spawns its workers as work
    is submitted."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
    try:
        with ProcessPoolExecutor(n, mp_context=get_context("spawn"),
                                 initializer=_one_thread) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_thread() -> None:
    """torch's pool, which a worker sets itself (the others: `worker_pool`)."""
    import torch

    torch.set_num_threads(1)


def _store(fold: Fold, outputs: FoldOutputs, path: Path, rkey: str, figures: dict) -> dict:
    """A fold's result (its groups and figures), written to `path` under its key."""
    res = {"test_groups": fold.test_groups, "seed": fold.seed, "repeat": fold.repeat,
           "groups": fold.groups, "n_test": int(len(outputs["y_test"])), **figures}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"key": rkey, "result": res}))
    tmp.replace(path)  # atomic: a killed run resumes from the folds that finished
    return res


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
