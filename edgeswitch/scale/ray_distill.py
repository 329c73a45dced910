"""`edgeswitch distill --engine ray`: DMD generation with Ray Data.

The pending shards (see dmd.shards) flow through two actor pools: edge workers read a shard's
clips from shared storage and run the edge model; cloud workers run the cloud model (loaded in
the actor, or reached over HTTP) and write the shard's Parquet part atomically. Each actor loads
its model once. Models travel to the actors as bytes, so workers need only the corpus files on
storage they can read (a shared mount on a real cluster).

The driver plans, resumes (skipping whole parts) and counts progress; it never holds the data.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeswitch.dmd.corpus import Shard, ShardReader
from edgeswitch.dmd.shards import (
    DistillJob,
    DistillSummary,
    ShardFailed,
    build_cloud,
    build_edge,
    cloud_step,
    edge_step,
    open_run,
    pack,
    read_shard,
    shard_records,
    unpack,
    write_failed,
    write_part,
)
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.scale.cluster import root_cause, start_ray


def _shard(batch: dict) -> Shard:
    return Shard(int(batch["index"][0]), str(batch["path"][0]), int(batch["start"][0]),
                 int(batch["stop"][0]), str(batch["ids"][0]))


class EdgeWorker:
    """Ray Data actor: shard -> clips and edge outputs (a video that cannot be read is
    recorded as failed here and skipped downstream)."""

    def __init__(self, job: DistillJob, edge_bytes: bytes | None) -> None:
        self.job = job
        self.edge = build_edge(job, edge_bytes)
        self.read = ShardReader(self.edge.classes_)

    def __call__(self, batch: dict) -> dict:
        shard = _shard(batch)
        row = {"index": [shard.index], "path": [shard.path], "start": [shard.start],
               "stop": [shard.stop], "ids": [shard.ids]}
        try:
            X, ids, groups = read_shard(self.job, shard, self.read)
        except ShardFailed as exc:
            write_failed(Path(self.job.out), shard, str(exc))
            return row | {"failed": [True], "X": [b""], "clip_ids": [b""], "groups": [b""],
                          "edge_proba": [b""], "edge_embedding": [b""]}
        out = edge_step(self.edge, X, self.job.batch_size)
        # sensor clips travel on to the cloud workers; videos are decoded again there,
        # since their frames are far larger than the file
        return row | {"failed": [False], "X": [b"" if shard.video else pack(X)],
                      "clip_ids": [pack(ids)], "groups": [pack(groups)],
                      "edge_proba": [pack(out.proba)], "edge_embedding": [pack(out.embedding)]}


class CloudWorker:
    """Ray Data actor: clips -> cloud probabilities -> the shard's Parquet part."""

    def __init__(self, job: DistillJob, cloud_bytes: bytes | None, manifest: dict) -> None:
        self.job, self.manifest = job, manifest
        self.cloud = build_cloud(job, tuple(manifest["classes"]), cloud_bytes)

    def __call__(self, batch: dict) -> dict:
        from edgeswitch.models.base import ModelOutput

        shard = _shard(batch)
        if bool(batch["failed"][0]):
            return {"index": [shard.index], "clips": [0]}
        ids, groups = unpack(batch["clip_ids"][0]), unpack(batch["groups"][0])
        X = read_shard(self.job, shard, None)[0] if shard.video else unpack(batch["X"][0])
        edge_out = ModelOutput(proba=unpack(batch["edge_proba"][0]),
                               embedding=unpack(batch["edge_embedding"][0]))
        proba = cloud_step(self.cloud, X, self.job.batch_size)
        write_part(Path(self.job.out), shard, shard_records(ids, groups, edge_out, proba,
                                                            self.manifest))
        return {"index": [shard.index], "clips": [len(ids)]}


def run_ray(job: DistillJob, workers: int = 2, address: str | None = None,
            cpus_per_worker: float = 1.0, progress: bool = True) -> DistillSummary:
    """Run the pending shards of `job` on Ray (a local cluster unless `address` is given)."""
    from tqdm.auto import tqdm

    if workers < 1 or cpus_per_worker <= 0:
        raise EdgeSwitchError(f"--workers must be >= 1 and --cpus-per-worker > 0, got "
                              f"{workers} and {cpus_per_worker}")
    t0 = time.perf_counter()
    startup, computed = 0.0, 0
    with open_run(job) as (manifest, shards, todo):
        if todo:
            import ray
            import ray.data

            t_init = time.perf_counter()
            started = start_ray(address, 2 * workers * cpus_per_worker)
            startup = time.perf_counter() - t_init
            try:
                ds = _pipeline(job, manifest, todo, workers, cpus_per_worker)
                bar = tqdm(total=len(todo), desc="DMD shards (ray)", disable=not progress,
                           leave=False)
                try:
                    for row in ds.iter_rows():
                        computed += int(row["clips"])
                        bar.update()
                except Exception as exc:  # a worker's error arrives as Ray's, in text
                    raise EdgeSwitchError(f"the Ray DMD run failed; finished shards are kept "
                                          f"and a rerun resumes: {root_cause(exc)}") from None
                finally:
                    bar.close()
            finally:
                if started:
                    ray.shutdown()
    return DistillSummary(len(shards), manifest["clips"], len(shards) - len(todo), len(todo),
                          computed, time.perf_counter() - t0, "ray", workers,
                          startup)


def _pipeline(job: DistillJob, manifest: dict, todo: list[Shard], workers: int,
              cpus_per_worker: float):
    """Pending shards -> edge actor pool -> cloud actor pool (which writes the parts)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts shards
    ctx.print_on_execution_start = False
    cloud_bytes = Path(job.cloud.model).read_bytes() if job.cloud and job.cloud.model else None
    items = [{"index": s.index, "path": s.path, "start": s.start, "stop": s.stop, "ids": s.ids}
             for s in todo]
    return (ray.data.from_items(items, override_num_blocks=len(items))
            .map_batches(EdgeWorker, batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=workers),
                         num_cpus=cpus_per_worker,
                         fn_constructor_args=(job, None if job.video else
                                              Path(job.edge).read_bytes()))
            .map_batches(CloudWorker, batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=workers),
                         num_cpus=cpus_per_worker,
                         fn_constructor_args=(job, cloud_bytes, manifest)))
