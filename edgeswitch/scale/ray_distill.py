"""`edgeswitch distill --engine ray`: DMD generation with Ray Data.

The pending shards (see dmd.shards) flow through two actor pools: edge workers read a shard's
clips from shared storage and run the edge model; cloud workers run the cloud model (loaded in
the actor, or reached over HTTP) and write the shard's Parquet part atomically. Each actor loads
its model once. Models travel to the actors as bytes, so workers need only the corpus files on
storage they can read (a shared mount on a real cluster).

The driver plans, resumes (skipping whole parts) and counts progress; it never holds the data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edgeswitch.dmd.shards import (
    DistillJob,
    DistillSummary,
    Shard,
    ShardReader,
    cloud_step,
    edge_step,
    pack,
    prepare,
    shard_records,
    unpack,
    write_part,
)
from edgeswitch.errors import EdgeSwitchError


def _shard(batch: dict) -> Shard:
    return Shard(int(batch["index"][0]), str(batch["path"][0]), int(batch["start"][0]),
                 int(batch["stop"][0]))


class EdgeWorker:
    """Ray Data actor: shard -> clips and edge outputs."""

    def __init__(self, edge_bytes: bytes, batch_size: int) -> None:
        from edgeswitch.models import OnnxClassifier

        self.edge = OnnxClassifier(edge_bytes)
        self.read = ShardReader(self.edge.classes_)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        shard = _shard(batch)
        clips = self.read(shard)
        out = edge_step(self.edge, clips.X, self.batch_size)
        return {"index": [shard.index], "path": [shard.path], "start": [shard.start],
                "stop": [shard.stop], "X": [pack(clips.X)], "ids": [pack(clips.ids.astype(str))],
                "groups": [pack(np.asarray(clips.groups).astype(str))],
                "edge_proba": [pack(out.proba)], "edge_embedding": [pack(out.embedding)]}


class CloudWorker:
    """Ray Data actor: clips -> cloud probabilities -> the shard's Parquet part."""

    def __init__(self, job: DistillJob, cloud_bytes: bytes | None, manifest: dict) -> None:
        self.job, self.manifest = job, manifest
        self.cloud = job.cloud.build(tuple(manifest["classes"]), cloud_bytes)

    def __call__(self, batch: dict) -> dict:
        from edgeswitch.data.clips import ClipBatch
        from edgeswitch.models.base import ModelOutput

        shard = _shard(batch)
        X = unpack(batch["X"][0])
        clips = ClipBatch(X=X, y=None, groups=unpack(batch["groups"][0]),
                          classes=tuple(self.manifest["classes"]), ids=unpack(batch["ids"][0]))
        edge_out = ModelOutput(proba=unpack(batch["edge_proba"][0]),
                               embedding=unpack(batch["edge_embedding"][0]))
        proba = cloud_step(self.cloud, X, self.job.batch_size)
        write_part(Path(self.job.out), shard, shard_records(clips, edge_out, proba,
                                                            self.manifest))
        return {"index": [shard.index], "clips": [len(X)]}


def _start_ray(address: str | None, workers: int, cpus_per_worker: float):
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # a local cluster: enough logical CPUs for both pools, even on a small machine
        # (ONNX Runtime runs one thread per actor, so the OS shares the real cores)
        need = int(np.ceil(2 * workers * cpus_per_worker)) + 1
        ray.init(num_cpus=max(os.cpu_count() or 1, need), **kwargs)
    return True


def run_ray(job: DistillJob, workers: int = 2, address: str | None = None,
            cpus_per_worker: float = 1.0, progress: bool = True) -> DistillSummary:
    """Run the pending shards of `job` on Ray (a local cluster unless `address` is given)."""
    from tqdm.auto import tqdm

    if workers < 1:
        raise EdgeSwitchError(f"--workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    manifest, shards, todo = prepare(job)
    startup = 0.0
    if todo:
        import ray
        import ray.data

        t_init = time.perf_counter()
        started = _start_ray(address, workers, cpus_per_worker)
        startup = time.perf_counter() - t_init
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours counts shards, below
            ctx.print_on_execution_start = False
            cloud_bytes = Path(job.cloud.model).read_bytes() if job.cloud.model else None
            items = [{"index": s.index, "path": s.path, "start": s.start, "stop": s.stop}
                     for s in todo]
            ds = (ray.data.from_items(items, override_num_blocks=len(items))
                  .map_batches(EdgeWorker, batch_size=1,
                               compute=ray.data.ActorPoolStrategy(size=workers),
                               num_cpus=cpus_per_worker,
                               fn_constructor_args=(Path(job.edge).read_bytes(),
                                                    job.batch_size))
                  .map_batches(CloudWorker, batch_size=1,
                               compute=ray.data.ActorPoolStrategy(size=workers),
                               num_cpus=cpus_per_worker,
                               fn_constructor_args=(job, cloud_bytes, manifest)))
            bar = tqdm(total=len(todo), desc="DMD shards (ray)", disable=not progress,
                       leave=False)
            try:
                for _ in ds.iter_rows():
                    bar.update()
            except Exception as exc:  # a worker's error arrives wrapped by Ray
                raise EdgeSwitchError(f"the Ray DMD run failed; finished shards are kept and "
                                      f"a rerun resumes: {_root_cause(exc)}") from None
            finally:
                bar.close()
        finally:
            if started:
                ray.shutdown()
    return DistillSummary(len(shards), manifest["clips"], len(shards) - len(todo), len(todo),
                          time.perf_counter() - t0, "ray", workers, startup)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
