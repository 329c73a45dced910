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
- **A clip the edge model cannot digest** (a value like 3e38 that turns its output
  non-finite) fails that clip, not its batch: the batch is run again clip by clip, and a clip
  that still fails is left out of the records, reported with the reason, and not sent to the
  cloud. (On Ray the reason travels as a NaN embedding row, so the record names it generically
  and the cloud is asked about it too.)
- **A clip the cloud answers unusably** (a reply that names no class, reason `malformed`; a
  request the cloud rejects, `rejected`, e.g. 422 for a value out of its range; an in-process
  model that raises, `error`) fails that clip, not its batch: the batch is asked again clip by
  clip, and the clips that still get no usable answer are left out of the records and
  reported with the reason. If a batch of several clips gets no answer for any of them
  (`rejected` or `error`), the cloud is refusing everything (a wrong model name, say): that
  stops the run like a cloud that does not answer.
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
from edgeswitch.models.base import ModelOutput, ProbaError, check_proba, model_identity

# cloud failures that belong to a clip, not to the cloud
CLIP_REASONS = (FallbackReason.MALFORMED,)
# cloud failures that may belong to a clip: a batch is retried clip by clip, and if no clip
# of it gets an answer the cloud (not the clips) is the problem
MAYBE_CLIP_REASONS = (FallbackReason.REJECTED, FallbackReason.ERROR)


@dataclass(frozen=True)
class EdgeOutputs(ModelOutput):
    """The edge's outputs for a unit; the clips it could not digest are in `failed` (their
    rows: uniform probabilities and a NaN embedding, which marks them where `failed` is lost,
    e.g. in Ray's transfer)."""

    failed: dict[int, str] = field(default_factory=dict)  # position in the unit -> reason


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
    streams: np.ndarray | None = None   # [n] str, with t: the clips' streams and start times
    t: np.ndarray | None = None


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


def edge_step(edge, X, batch_size: int) -> EdgeOutputs:
    """The edge's outputs batch by batch; a batch that fails is run again clip by clip, and
    the clips that still fail are marked (see EdgeOutputs)."""
    probas, embeddings, failed = [], [], {}
    for start in range(0, len(X), batch_size):
        batch = X[start:start + batch_size]
        try:
            out = edge.outputs(batch)
            probas.append(out.proba.astype(np.float32))
            embeddings.append(out.embedding.astype(np.float32))
            continue
        except EdgeSwitchError as exc:
            first = exc
        for i in range(len(batch)):
            try:
                out = edge.outputs(batch[i:i + 1]) if len(batch) > 1 else None
            except EdgeSwitchError as exc:
                out, first = None, exc
            if out is None:
                failed[start + i] = f"edge model {model_identity(edge)}: {first}"
                probas.append(None)
                embeddings.append(None)
            else:
                probas.append(out.proba.astype(np.float32))
                embeddings.append(out.embedding.astype(np.float32))
    if failed and len(failed) == len(X) and not any(p is not None for p in probas):
        raise DataError(f"the edge model {getattr(edge, 'name', '?')} answered none of the "
                        f"unit's {len(X)} clips: {next(iter(failed.values()))}")
    k = next(p.shape[1] for p in probas if p is not None)
    e = next(m.shape[1] for m in embeddings if m is not None)
    return EdgeOutputs(
        proba=np.concatenate([p if p is not None else np.full((1, k), 1 / k, np.float32)
                              for p in probas]),
        embedding=np.concatenate([m if m is not None else np.full((1, e), np.nan, np.float32)
                                  for m in embeddings]),
        failed=failed)


def _ask(cloud, X, k: int) -> tuple[np.ndarray | None, str, str]:
    """(proba, "", "") or (None, reason, detail): one call, its answer checked."""
    reply = ask(cloud, X)
    if not reply.ok:
        return None, str(reply.reason), reply.detail
    try:
        return check_proba(reply.proba, len(X), k, str(cloud.name)), "", ""
    except ProbaError as exc:
        return None, exc.reason, str(exc)


def cloud_step(cloud, X, batch_size: int, k: int, skip=()) -> CloudAnswers:
    """The cloud's answer for every clip but those at `skip` (the edge failed them), batch by
    batch (see the failure policy above)."""
    rows = np.zeros((len(X), k), np.float32)
    failed: dict[int, str] = {}
    todo = [i for i in range(len(X)) if i not in set(skip)] if len(skip) else None
    for start in range(0, len(X) if todo is None else len(todo), batch_size):
        where = np.arange(start, min(start + batch_size, len(X))) if todo is None else \
            np.asarray(todo[start:start + batch_size])
        batch = X[start:start + batch_size] if todo is None else X[where]
        proba, reason, detail = _ask(cloud, batch, k)
        if proba is not None:
            rows[where] = proba
            continue
        _stop_unless_clip_reason(cloud, reason, detail, MAYBE_CLIP_REASONS)
        answered = 0
        lost: dict[int, str] = {}
        for i in range(len(batch)):  # one clip's bad answer costs that clip only
            one, reason, detail = _ask(cloud, batch[i:i + 1], k) if len(batch) > 1 else \
                (None, reason, detail)
            if one is not None:
                rows[where[i]] = one[0]
                answered += 1
            else:
                _stop_unless_clip_reason(cloud, reason, detail, MAYBE_CLIP_REASONS)
                lost[int(where[i])] = f"{reason}: {detail}"
        if len(batch) > 1 and not answered and \
                any(why.split(":")[0] in MAYBE_CLIP_REASONS for why in lost.values()):
            raise CloudDownError(f"the cloud {cloud.name} answered none of {len(batch)} clips "
                                 f"asked one by one ({next(iter(lost.values()))})")
        failed.update(lost)
    return CloudAnswers(rows, failed)


def _stop_unless_clip_reason(cloud, reason: str, detail: str, also=()) -> None:
    if reason not in CLIP_REASONS and reason not in also:
        raise CloudDownError(f"the cloud {cloud.name} did not answer ({reason}: "
                             f"{detail or 'no detail'})")


def unit_records(job: Job, clips: UnitClips, edge_out: ModelOutput,
                 answers: CloudAnswers) -> tuple[DMDRecords, list[list]]:
    """The unit's records (clips with both answers) and its failed clips
    [[position, clip id, reason], ...]."""
    edge_failed = dict(getattr(edge_out, "failed", {}))
    for i in np.flatnonzero(np.isnan(edge_out.embedding).any(axis=1)):  # the marker
        edge_failed.setdefault(int(i), "edge: the edge model gave no usable output for it")
    reasons = answers.failed | edge_failed  # the edge's reason first: it failed first
    keep = np.ones(len(clips.ids), bool)
    keep[list(reasons)] = False
    ids = np.asarray(clips.ids)  # as the source gives them (a file's sources give str)
    who = job.identity
    records = DMDRecords(ids=ids[keep], groups=np.asarray(clips.groups)[keep],
                         edge_proba=edge_out.proba[keep], edge_embedding=edge_out.embedding[keep],
                         cloud_proba=answers.proba[keep], classes=who.classes,
                         edge_model=who.edge_model, cloud_model=who.cloud_model,
                         streams=None if clips.streams is None else np.asarray(clips.streams)[keep],
                         t=None if clips.t is None else np.asarray(clips.t)[keep])
    failed = [[i, str(ids[i]), why] for i, why in sorted(reasons.items())]
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
        try:
            edge_out = edge_step(edge, clips.X, job.batch_size)
        except DataError as exc:  # the edge answered none of the unit's clips
            job.sink.fail(unit, str(exc))
            result.failed_units[unit.path] = str(exc)
            continue
        try:
            answers = cloud_step(cloud, clips.X, job.batch_size, k, skip=list(edge_out.failed))
        except CloudDownError as exc:
            raise CloudDownError(f"{exc}; DMD stopped after {done} of {len(todo)} units, "
                                 f"{job.sink.stopped()}") from None
        records, failed = unit_records(job, clips, edge_out, answers)
        job.sink.write(unit, records, failed)
        result.computed_clips += len(clips.ids)
        result.failed_clips.update({c[1]: c[2] for c in failed})
    return result
