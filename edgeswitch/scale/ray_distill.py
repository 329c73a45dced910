"""`edgeswitch distill --engine ray`: the DMD runner's pending units on Ray Data.

The units (see dmd.runner) flow through two actor pools: edge workers read a unit's clips from
shared storage and run the edge model; cloud workers run the cloud model (loaded in the actor,
or reached over HTTP) and write the unit's part through the sink. Each actor builds its models
once, from the job's models object (ONNX models travel as bytes, so workers need only the
corpus files on storage they can read: a shared mount on a real cluster). Both pools call the
runner's own unit functions with the same batches as the local engine, so the records are
bit-identical, and the same failure policy holds: an unreadable unit is recorded and skipped,
a cloud that does not answer stops the run.

The driver plans, resumes (skipping whole parts) and counts progress; it never holds the data.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgeswitch.config import DistillConfig, from_values
from edgeswitch.dmd.corpus import Shard
from edgeswitch.dmd.runner import (
    CloudAnswers,
    EngineResult,
    Job,
    UnitClips,
    UnitUnreadable,
    cloud_step,
    edge_step,
    read_unit,
    unit_records,
)
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import ModelOutput
from edgeswitch.scale.cluster import root_cause, start_ray


def pack(a: np.ndarray) -> bytes:
    """An array as `.npy` bytes (no pickle), to pass between Ray stages."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


def _unit(batch: dict) -> Shard:
    return Shard(int(batch["index"][0]), str(batch["path"][0]), int(batch["start"][0]),
                 int(batch["stop"][0]), str(batch["ids"][0]), str(batch["problem"][0]))


class EdgeWorker:
    """Ray Data actor: unit -> clips and edge outputs (a unit whose input cannot be read is
    recorded as failed here and skipped downstream)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.edge = job.models.edge()

    def __call__(self, batch: dict) -> dict:
        unit = _unit(batch)
        row = {k: [v] for k, v in asdict(unit).items()}
        try:
            clips = read_unit(self.job, unit)
        except UnitUnreadable as exc:
            self.job.sink.fail(unit, str(exc))
            return row | {"failed": [str(exc)], "X": [b""], "clip_ids": [b""], "groups": [b""],
                          "streams": [b""], "t": [b""], "edge_proba": [b""],
                          "edge_embedding": [b""]}
        out = edge_step(self.edge, clips.X, self.job.batch_size)
        # sensor clips travel on to the cloud workers; videos are decoded again there,
        # since their frames are far larger than the file
        return row | {"failed": [""], "X": [pack(clips.X) if self.job.source.ship_clips
                                            else b""],
                      "clip_ids": [pack(clips.ids)], "groups": [pack(clips.groups)],
                      "streams": [b"" if clips.streams is None else pack(clips.streams)],
                      "t": [b"" if clips.t is None else pack(clips.t)],
                      "edge_proba": [pack(out.proba)], "edge_embedding": [pack(out.embedding)]}


class CloudWorker:
    """Ray Data actor: clips -> cloud probabilities -> the unit's part."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.cloud = job.models.cloud(job.identity.classes)

    def __call__(self, batch: dict) -> dict:
        unit = _unit(batch)
        if batch["failed"][0]:
            return {"index": [unit.index], "path": [unit.path], "clips": [0],
                    "failed": [str(batch["failed"][0])], "failed_clips": ["[]"]}
        ids, groups = unpack(batch["clip_ids"][0]), unpack(batch["groups"][0])
        streams, t = (unpack(batch[k][0]) if batch[k][0] else None for k in ("streams", "t"))
        X = unpack(batch["X"][0]) if self.job.source.ship_clips else \
            read_unit(self.job, unit).X
        edge_out = ModelOutput(proba=unpack(batch["edge_proba"][0]),
                               embedding=unpack(batch["edge_embedding"][0]))
        answers: CloudAnswers = cloud_step(self.cloud, X, self.job.batch_size,
                                           len(self.job.identity.classes))
        records, failed = unit_records(self.job, UnitClips(X, ids, groups, streams, t), edge_out,
                                       answers)
        self.job.sink.write(unit, records, failed)
        return {"index": [unit.index], "path": [unit.path], "clips": [len(ids)], "failed": [""],
                "failed_clips": [json.dumps(failed)]}


_DISTILL = DistillConfig()


@dataclass
class RayEngine:
    """An engine for `dmd.runner.run`: the pending units on Ray (a local cluster unless
    `address` is given)."""

    workers: int = _DISTILL.workers
    address: str | None = None
    cpus_per_worker: float = _DISTILL.cpus_per_worker

    def __post_init__(self) -> None:  # the schema's ranges, for callers that skip the config
        from_values(DistillConfig, {"workers": self.workers,
                                    "cpus_per_worker": self.cpus_per_worker}, " of RayEngine")

    def __call__(self, job: Job, todo: list[Shard], progress: bool) -> EngineResult:
        from tqdm.auto import tqdm

        result = EngineResult(0, {}, {}, "ray", self.workers)
        if not todo:
            return result
        import ray

        t_init = time.perf_counter()
        started = start_ray(self.address, 2 * self.workers * self.cpus_per_worker)
        result.startup_s = time.perf_counter() - t_init
        try:
            ds = self._pipeline(job, todo)
            bar = tqdm(total=len(todo), desc="DMD units (ray)", disable=not progress,
                       leave=False)
            try:
                for row in ds.iter_rows():
                    result.computed_clips += int(row["clips"])
                    if row["failed"]:
                        result.failed_units[str(row["path"])] = str(row["failed"])
                    result.failed_clips.update({c[1]: c[2] for c in
                                                json.loads(row["failed_clips"])})
                    bar.update()
            except Exception as exc:  # a worker's error arrives as Ray's, in text
                raise EdgeSwitchError(f"the Ray DMD run failed; finished shards are kept "
                                      f"and a rerun resumes: {root_cause(exc)}") from None
            finally:
                bar.close()
        finally:
            if started:
                ray.shutdown()
        return result

    def _pipeline(self, job: Job, todo: list[Shard]):
        """Pending units -> edge actor pool -> cloud actor pool (which writes the parts)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts units
        ctx.print_on_execution_start = False
        def pool(worker) -> dict:
            return {"fn": worker, "fn_constructor_args": (job,), "batch_size": 1,
                    "compute": ray.data.ActorPoolStrategy(size=self.workers),
                    "num_cpus": self.cpus_per_worker}

        return (ray.data.from_items([asdict(s) for s in todo], override_num_blocks=len(todo))
                .map_batches(**pool(EdgeWorker)).map_batches(**pool(CloudWorker)))
