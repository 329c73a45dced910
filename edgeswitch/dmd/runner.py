"""The one DMD runner: a source of units, the edge then the cloud per batch, a sink.

A **source** plans units of work (`corpus.Shard`: an in-memory batch, a shard of `.npz`
files, one video) and reads a unit's clips, ids and groups (dmd.sources; videos:
video.dmd). **Models** say how a worker gets the edge and the cloud and what they are called
in the records. A **sink** keeps the records: in memory (then one Parquet file), or a folder of
Parquet parts with a manifest, atomic writes and resume (dmd.sinks). An **engine** drives the
pending units: `local` (this process, here) or Ray (scale.ray_distill), both through the same
unit functions (`read_unit`, `edge_step`, `cloud_step`, `unit_records`) with the same
batches, so their records are bit-identical.

Failure policy (one, for every source, sink and engine):
- **Input that cannot be read** (a corrupt `.npz`, an undecodable video, a video shorter than
  one clip) fails its unit: the sink records the unit with the reason and the run goes on.
- **A clip the cloud answers unusably** (a reply that names no class, reason `malformed`)
  fails that clip, not its batch: the batch is asked again clip by clip, and the clips that
  still get no usable answer are left out of the records and reported with the reason.
- **A cloud that does not answer** (unreachable, timeout, HTTP 5xx after the client's
  retries, wrong classes, any other reason) stops the run with `CloudDownError`, which names
  the cloud and the reason. Units finished before it stay written, so in a folder the same
  command resumes; an in-memory run writes nothing.
- A run in which no clip has both answers fails with `DataError` (there is nothing to train on).

The cloud is asked only through `cloud.client.ask` (its `request` where it has one, else
`predict_proba`); the edge through `outputs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeswitch.cloud.client import ask
from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.config import DistillConfig, from_values
from edgeswitch.dmd.corpus import Shard
from edgeswitch.dmd.records import DMDRecords
from edgeswitch.errors import DataError, EdgeSwitchError
from edgeswitch.models.base import ModelOutput, ProbaError, check_proba

# cloud failures that belong to a clip, not to the cloud
CLIP_REASONS = (FallbackReason.MALFORMED,)


class UnitUnreadable(DataError):
    """A unit's input cannot be read: the unit fails, the run goes on."""


class CloudDownError(EdgeSwitchError):
    """The cloud did not answer at all: the run stops (finished units stay written)."""


@dataclass(frozen=True)
class Identity:
    """What the records say about the models (and what a resumed run must match)."""

    classes: tuple[str, ...]
    edge_model: str
    cloud_model: str


@dataclass
class Plan:
    """A source's units, in record order, and what pins its input for a resume."""

    units: list[Shard]
    inputs: list[dict] = field(default_factory=list)   # path, clips, bytes, mtime per file
    settings: dict = field(default_factory=dict)       # e.g. shard_size, the clip spec
    clips: int | None = None                           # None while unknown (videos)


@dataclass
class UnitClips:
    X: Any                # model input: clips [n, T, C], or an object array of video clips
    ids: np.ndarray       # [n] str
    groups: np.ndarray    # [n] str


@dataclass
class CloudAnswers:
    """The cloud's rows for a unit's clips; clips it answered unusably are in `failed`."""

    proba: np.ndarray                                # [n, K], rows of failed clips are 0
    failed: dict[int, str] = field(default_factory=dict)  # position in the unit -> reason


class Source(Protocol):
    ship_clips: bool  # Ray: send the clips from edge to cloud workers (False: read again)

    def plan(self) -> Plan: ...

    def read(self, unit: Shard, classes: tuple[str, ...]) -> UnitClips: ...


class Models(Protocol):
    def edge(self) -> Any: ...

    def cloud(self, classes: tuple[str, ...]) -> Any: ...

    def close(self, cloud) -> None: ...  # a client the models built (not one they were given)

    def identity(self, edge, cloud) -> Identity: ...


class Sink(Protocol):
    def open(self, plan: Plan, identity: Identity,
             batch_size: int) -> Any: ...  # context manager -> pending units

    def write(self, unit: Shard, records: DMDRecords, failed: list[list]) -> None: ...

    def fail(self, unit: Shard, reason: str) -> None: ...

    def stopped(self) -> str: ...  # what a stopped run leaves, for the error message


@dataclass
class Job:
    """Everything a worker needs for a unit (it pickles, for Ray's actors)."""

    source: Source
    models: Models
    sink: Sink
    identity: Identity
    batch_size: int


@dataclass
class DistillSummary:
    shards: int                       # units planned
    clips: int | None                 # clips planned (None for videos until decoded)
    skipped: int                      # units already done by an earlier run
    written: int                      # units this run finished (records or failure)
    computed_clips: int               # clips this run computed
    seconds: float
    engine: str
    workers: int = 1
    startup_s: float = 0.0            # ray: starting or joining the cluster
    failed_units: dict[str, str] = field(default_factory=dict)  # input -> reason (this run)
    failed_clips: dict[str, str] = field(default_factory=dict)  # clip id -> reason (this run)

    @property
    def clips_per_s(self) -> float:
        """Clips computed by this run per second of work (start-up excluded)."""
        work = self.seconds - self.startup_s
        return self.computed_clips / work if work > 0 else float("nan")


@dataclass
class EngineResult:
    computed_clips: int
    failed_units: dict[str, str]
    failed_clips: dict[str, str]
    engine: str
    workers: int = 1
    startup_s: float = 0.0


Engine = Callable[[Job, list[Shard], bool], EngineResult]


# ---- the unit functions every engine runs -------------------------------------------------

def read_unit(job: Job, unit: Shard) -> UnitClips:
    """The unit's clips, or UnitUnreadable with the reason."""
    if unit.problem:
        raise UnitUnreadable(unit.problem)
    return job.source.read(unit, job.identity.classes)


def edge_step(edge, X, batch_size: int) -> ModelOutput:
    outs = [edge.outputs(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    return ModelOutput(proba=np.concatenate([o.proba for o in outs]).astype(np.float32),
                       embedding=np.concatenate([o.embedding for o in outs]).astype(np.float32))


def _ask(cloud, X, k: int) -> tuple[np.ndarray | None, str, str]:
    """(proba, "", "") or (None, reason, detail): one call, its answer checked."""
    reply = ask(cloud, X)
    if not reply.ok:
        return None, str(reply.reason), reply.detail
    try:
        return check_proba(reply.proba, len(X), k, str(cloud.name)), "", ""
    except ProbaError as exc:
        return None, exc.reason, str(exc)


def cloud_step(cloud, X, batch_size: int, k: int) -> CloudAnswers:
    """The cloud's answer for every clip, batch by batch (see the failure policy above)."""
    rows = np.zeros((len(X), k), np.float32)
    failed: dict[int, str] = {}
    for start in range(0, len(X), batch_size):
        batch = X[start:start + batch_size]
        proba, reason, detail = _ask(cloud, batch, k)
        if proba is not None:
            rows[start:start + len(batch)] = proba
            continue
        _stop_unless_clip_reason(cloud, reason, detail)
        for i in range(len(batch)):  # one clip's bad answer costs that clip only
            one, reason, detail = _ask(cloud, batch[i:i + 1], k) if len(batch) > 1 else \
                (None, reason, detail)
            if one is not None:
                rows[start + i] = one[0]
            else:
                _stop_unless_clip_reason(cloud, reason, detail)
                failed[start + i] = f"{reason}: {detail}"
    return CloudAnswers(rows, failed)


def _stop_unless_clip_reason(cloud, reason: str, detail: str) -> None:
    if reason not in CLIP_REASONS:
        raise CloudDownError(f"the cloud {cloud.name} did not answer ({reason}: "
                             f"{detail or 'no detail'})")


def unit_records(job: Job, clips: UnitClips, edge_out: ModelOutput,
                 answers: CloudAnswers) -> tuple[DMDRecords, list[list]]:
    """The unit's records (clips with both answers) and its failed clips
    [[position, clip id, reason], ...]."""
    keep = np.ones(len(clips.ids), bool)
    keep[list(answers.failed)] = False
    ids = np.asarray(clips.ids)  # as the source gives them (a file's sources give str)
    who = job.identity
    records = DMDRecords(ids=ids[keep], groups=np.asarray(clips.groups)[keep],
                         edge_proba=edge_out.proba[keep], edge_embedding=edge_out.embedding[keep],
                         cloud_proba=answers.proba[keep], classes=who.classes,
                         edge_model=who.edge_model, cloud_model=who.cloud_model)
    failed = [[i, str(ids[i]), why] for i, why in sorted(answers.failed.items())]
    return records, failed


# ---- the run ------------------------------------------------------------------------------

def resolve_batch_size(batch_size: int | None) -> int:
    """The one default is `DistillConfig.batch_size`, and its range is the schema's."""
    if batch_size is None:
        return DistillConfig().batch_size
    return from_values(DistillConfig, {"batch_size": batch_size}, " of the DMD run").batch_size


@contextmanager
def _built(models: Models) -> Iterator[tuple[Any, Any, Identity]]:
    edge = models.edge()
    cloud = models.cloud(tuple(edge.classes_))
    try:
        yield edge, cloud, models.identity(edge, cloud)
    finally:
        models.close(cloud)


def run(source: Source, models: Models, sink: Sink, batch_size: int | None = None,
        engine: Engine | None = None, progress: bool = False) -> DistillSummary:
    """DMD over every pending unit of `source` into `sink`; `engine` None is this process."""
    batch_size = resolve_batch_size(batch_size)
    t0 = time.perf_counter()
    plan = source.plan()
    with _built(models) as (edge, cloud, identity):
        job = Job(source, models, sink, identity, batch_size)
        with sink.open(plan, identity, batch_size) as todo:
            if engine is None:
                result = _local(job, todo, edge, cloud, progress)
            else:
                result = engine(job, todo, progress)
    n = len(plan.units)
    return DistillSummary(n, plan.clips, n - len(todo), len(todo), result.computed_clips,
                          time.perf_counter() - t0, result.engine, result.workers,
                          result.startup_s, result.failed_units, result.failed_clips)


def _local(job: Job, todo: list[Shard], edge, cloud, progress: bool) -> EngineResult:
    """The embedded engine: every pending unit in this process, in order."""
    from tqdm.auto import tqdm

    k = len(job.identity.classes)
    result = EngineResult(0, {}, {}, "local")
    for done, unit in enumerate(tqdm(todo, desc="DMD", disable=not progress, leave=False)):
        try:
            clips = read_unit(job, unit)
        except UnitUnreadable as exc:
            job.sink.fail(unit, str(exc))
            result.failed_units[unit.path] = str(exc)
            continue
        edge_out = edge_step(edge, clips.X, job.batch_size)
        try:
            answers = cloud_step(cloud, clips.X, job.batch_size, k)
        except CloudDownError as exc:
            raise CloudDownError(f"{exc}; DMD stopped after {done} of {len(todo)} units, "
                                 f"{job.sink.stopped()}") from None
        records, failed = unit_records(job, clips, edge_out, answers)
        job.sink.write(unit, records, failed)
        result.computed_clips += len(clips.ids)
        result.failed_clips.update({c[1]: c[2] for c in failed})
    return result
