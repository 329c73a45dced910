"""Run configuration: one typed schema for every default, type and range.

Each table of a TOML config file is a validated dataclass below (pydantic dataclasses, so they
stay plain dataclasses for `asdict` / `fields` / `replace`). A config file only needs the keys
it changes; configs/watch.toml lists every key. The command-line flags are generated from the
same fields (edgeswitch/cli/flags.py): a field's description is the flag's help, its default
the flag's documented default, its range the flag's check. So there is one place to change a
default, and a flag left out never overrides the file.

Values are checked strictly: `lr = "fast"` or `adaptive = "no"` is an error naming the key,
not a coercion or a traceback from deep inside a run.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as _PydanticError
from pydantic.dataclasses import dataclass

from edgeswitch.errors import EdgeSwitchError

_STRICT = ConfigDict(extra="forbid")
Float = Annotated[float, Field(strict=True)]   # an int is a float; a string is not


def describe(description: str, **limits) -> Any:
    return Field(description=description, **limits)


# names the schema knows without importing the code that implements them (imports flow down)
Arch = Literal["edge-cnn", "cloud-resnet"]                    # edgeswitch.models.nets
FeatureGroup = Literal["proba", "confidence", "embedding"]    # edgeswitch.switcher.features
SwitcherFamily = Literal["linear", "mlp", "gbt"]              # edgeswitch.switcher registry
SwitcherTarget = Literal["hard", "soft", "gain"]              # edgeswitch.switcher.select
VlmConstraint = Literal["json_schema", "guided_choice", "none"]  # edgeswitch.video.vlm
StreamMode = Literal["recording", "subject", "none"]          # edgeswitch.data.streams
StreamRouterName = Literal["belief", "switcher"]               # edgeswitch.switcher.stream
ARCHS: tuple[str, ...] = get_args(Arch)
FEATURE_GROUPS: tuple[str, ...] = get_args(FeatureGroup)
TARGETS: tuple[str, ...] = get_args(SwitcherTarget)
CONSTRAINTS: tuple[str, ...] = get_args(VlmConstraint)


@dataclass(config=_STRICT)
class ModelConfig:
    """A network to train (the edge or the cloud model)."""

    arch: Annotated[Arch, describe("network: edge-cnn or cloud-resnet")] = "edge-cnn"
    arch_params: Annotated[dict[str, Any], describe("the network's own parameters")] = \
        field(default_factory=dict)
    epochs: Annotated[StrictInt, describe("training epochs", ge=1)] = 30
    lr: Annotated[Float, describe("learning rate", gt=0)] = 3e-3
    batch_size: Annotated[StrictInt, describe("clips per training step", ge=2)] = 64
    rotate_deg: Annotated[Float, describe("random sensor-frame rotation (augmentation), "
                                          "degrees", ge=0)] = 30.0
    ensemble: Annotated[StrictInt, describe("networks averaged into one model (seeds seed, "
                                            "seed+1, ...)", ge=1)] = 1


@dataclass(config=_STRICT)
class SwitcherConfig:
    """The switcher and its DMD targets (see edgeswitch/switcher/)."""

    family: Annotated[SwitcherFamily,
                      describe("switcher family: linear, mlp (the paper's) or gbt")] = "linear"
    target: Annotated[SwitcherTarget,
                      describe("DMD target: hard (agreement with the answer an offload gets), "
                               "soft (its probability of the edge class) or gain (one minus "
                               "the expected gain of offloading)")] = "hard"
    hidden: Annotated[StrictInt, describe("mlp: hidden units", ge=1)] = 32
    features: Annotated[list[FeatureGroup], describe("edge outputs the switcher reads",
                                                     min_length=1)] = \
        field(default_factory=lambda: ["proba", "confidence", "embedding"])
    epochs: Annotated[StrictInt, describe("mlp: most epochs (group CV picks the number)",
                                          ge=1)] = 400
    l2: Annotated[Float, describe("linear: weight penalty (confidence unpenalised)", ge=0)] = 10.0
    augment_views: Annotated[StrictInt, describe("DMD also on this many rotated views of each "
                                                 "pool clip", ge=0)] = 0


@dataclass(config=_STRICT)
class FusionConfig:
    """How an offloaded clip is answered (see switcher/fusion.py)."""

    method: Annotated[Literal["none", "dmd", "fixed"],
                      describe("none: the cloud answers; dmd: log-linear fusion of edge and "
                               "cloud, its edge weight fitted on DMD records (no labels); "
                               "fixed: edge_weight as given")] = "dmd"
    edge_weight: Annotated[Float, describe("fixed: the edge's weight in the fusion", ge=0)] = 1.0


@dataclass(config=_STRICT)
class StreamConfig:
    """The router a device runs over its stream of clips (see edgeswitch/switcher/stream.py)."""

    router: Annotated[StreamRouterName,
                      describe("what `demo` deploys: belief (a per-stream belief that carries "
                               "the cloud's answers and the edge's recent evidence) or "
                               "switcher (the DMD switcher, each clip alone)")] = "belief"
    answers: Annotated[Literal["belief", "fusion"],
                       describe("belief router: an offloaded clip is answered by the belief "
                                "with the cloud's answer in it, or by the per-clip fusion")] = \
        "belief"
    fit: Annotated[StrictBool, describe("fit the belief's switch rate and evidence weights on "
                                        "the unlabelled pool streams (DMD: the cloud is the "
                                        "teacher); else use the values below")] = True
    switch: Annotated[Float, describe("belief: per clip, the chance the activity changes "
                                      "(a memoryless regime runs beside it)", gt=0, lt=1)] = 0.02
    edge_weight: Annotated[Float, describe("belief: weight of each clip's edge posterior as "
                                           "evidence (consecutive clips overlap)", gt=0,
                                           le=1)] = 0.3
    cloud_weight: Annotated[Float, describe("belief: weight of a cloud answer as evidence",
                                            gt=0)] = 1.0
    alarm: Annotated[list[StrictStr], describe("classes the edge claims that are always "
                                               "offloaded, whatever the belief carries (a "
                                               "fall); ignored when not a class")] = \
        field(default_factory=lambda: ["fall"])
    max_streams: Annotated[StrictInt, describe("streams whose state a device process keeps "
                                               "(the least recently seen is forgotten)",
                                               ge=1)] = 10_000


@dataclass(config=_STRICT)
class BenchmarkConfig:
    """`edgeswitch benchmark`: cross-validated evaluation of every router."""

    folds: Annotated[StrictInt, describe("folds per repeat: every group tested once", ge=2)] = 5
    repeats: Annotated[StrictInt, describe("re-deal the folds with other seeds", ge=1)] = 1
    abc_members: Annotated[StrictInt, describe("edge models in the Agreement-Based Cascading "
                                               "ensemble (the deployed edge is one)", ge=2)] = 3
    bootstrap: Annotated[StrictInt, describe("resamples of folds for the confidence intervals",
                                             ge=100)] = 2000
    processes: Annotated[StrictInt, describe("processes evaluating the folds, which share out "
                                             "each fold's tasks (0: one per CPU core; 1: all "
                                             "in this process)", ge=0)] = 0


@dataclass(config=_STRICT)
class CalibrationConfig:
    """How the offload threshold is chosen on unlabelled calibration clips."""

    mode: Annotated[Literal["offload", "budget", "disagreement"],
                    describe("offload: a target share offloaded; budget: cost per clip as a "
                             "fraction of cloud-only; disagreement: edge/cloud disagreement "
                             "among kept clips <= epsilon with probability >= 1 - delta")] = \
        "offload"
    rate: Annotated[Float, describe("offload: share of clips offloaded", ge=0, le=1)] = 0.5
    budget: Annotated[Float, describe("budget: cost per clip as a fraction of cloud-only",
                                      gt=0)] = 0.5
    epsilon: Annotated[Float, describe("disagreement: most disagreement among kept clips",
                                       gt=0, lt=1)] = 0.05
    delta: Annotated[Float, describe("disagreement: ... holding with probability >= 1 - delta",
                                     gt=0, lt=1)] = 0.1
    grid: Annotated[StrictInt, describe("candidate thresholds (pool-score quantiles)", ge=1)] = 40
    adaptive: Annotated[StrictBool, describe("offload/budget: hold the offload rate on the live "
                                             "stream (else keep the threshold fixed)")] = True
    step: Annotated[Float, describe("adaptive: threshold step per clip", gt=0)] = 0.01


@dataclass(config=_STRICT)
class RuntimeConfig:
    """How the edge reaches the cloud (see edgeswitch/cloud/remote.py)."""

    protocol: Annotated[Literal["native", "openai"],
                        describe("native /v1/classify or OpenAI chat completions")] = "native"
    deadline_ms: Annotated[Float, describe("per clip, from arrival to answer: past it the edge "
                                           "answer stands, unverified (a sensor cloud; a VLM "
                                           "has [video] vlm_deadline_ms, a DMD run [distill] "
                                           "cloud_timeout_ms)", gt=0)] = 500.0
    retries: Annotated[StrictInt, describe("extra attempts, only while the deadline allows",
                                           ge=0)] = 2
    backoff_ms: Annotated[Float, describe("first retry waits up to this (full jitter)",
                                          ge=0)] = 20.0
    backoff_max_ms: Annotated[Float, describe("... doubling per retry, capped here", ge=0)] = 200.0
    breaker_failures: Annotated[StrictInt, describe("consecutive failures that open the circuit",
                                                    ge=1)] = 5
    breaker_reset_s: Annotated[Float, describe("seconds before an open circuit lets one probe "
                                               "through", gt=0)] = 5.0
    batch: Annotated[StrictInt, describe("classify: clips per hybrid call", ge=1)] = 1
    shadow_rate: Annotated[Float, describe("also send this share of kept clips to the cloud, "
                                           "for the decision log only", ge=0, le=1)] = 0.0

    def __post_init__(self) -> None:
        if self.backoff_ms > self.backoff_max_ms:
            raise ValueError("backoff_ms must be <= backoff_max_ms")


@dataclass(config=_STRICT)
class ServeConfig:
    """The cloud model server (see edgeswitch/serving/)."""

    max_batch: Annotated[StrictInt, describe("dynamic batching: most clips per model run (1 = "
                                             "no batching)", ge=1)] = 32
    max_wait_ms: Annotated[Float, describe("extra wait for a batch to fill (0: run what queued "
                                           "during the last run, adding no latency)", ge=0)] = 0.0
    max_body_mb: Annotated[Float, describe("largest request body, else HTTP 413", gt=0)] = 16.0
    max_clips: Annotated[StrictInt, describe("most clips per request", ge=1)] = 1024
    threads: Annotated[StrictInt, describe("onnxruntime threads per model run", ge=1)] = 1
    server: Annotated[Literal["fastapi", "ray"],
                      describe("fastapi: uvicorn in this process; ray: a Ray Serve application "
                               "with model replicas and the same HTTP API (on the [ray] "
                               "cluster)")] = "fastapi"
    replicas: Annotated[StrictInt, describe("ray: model replicas (the minimum when "
                                            "autoscaling)", ge=1)] = 1
    max_replicas: Annotated[StrictInt, describe("ray: autoscale up to this many replicas on "
                                                "ongoing requests (0: a fixed number)",
                                                ge=0)] = 0
    target_ongoing: Annotated[Float, describe("ray: ongoing requests per replica the "
                                              "autoscaler aims at", gt=0)] = 4.0
    cpus_per_replica: Annotated[Float, describe("ray: CPUs each replica reserves", gt=0)] = 1.0
    max_ongoing: Annotated[StrictInt, describe("ray: requests one replica holds at once, so "
                                               "batches can fill (Ray's own default, 5, caps "
                                               "a batch at 5 requests)", ge=1)] = 64
    max_queue_requests: Annotated[StrictInt, describe(
        "overload: most model requests (classify, chat) the server holds at once, queued or "
        "running; beyond it HTTP 503 with Retry-After, before the body is read (ray: the "
        "requests queued per deployment)", ge=1)] = 256
    max_queue_clips: Annotated[StrictInt, describe(
        "overload: most clips waiting for or in a model run; a request that would pass it "
        "gets HTTP 503 with Retry-After (at least max_clips)", ge=1)] = 4096
    retry_after_s: Annotated[StrictInt, describe("overload: the Retry-After seconds of a "
                                                 "503 (how long a client should stay away)",
                                                 ge=1)] = 1
    cors_origins: Annotated[list[str], describe(
        "browser origins allowed to call the API (CORS), e.g. http://127.0.0.1:8060 for "
        "`edgeswitch device-page`; none: no CORS headers, browsers refuse other origins")] = \
        field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be 0 or >= replicas "
                             f"({self.replicas})")
        if self.max_queue_clips < self.max_clips:
            raise ValueError(f"max_queue_clips ({self.max_queue_clips}) must be >= max_clips "
                             f"({self.max_clips}): a full request could never be admitted")
        for origin in self.cors_origins:  # an origin is scheme://host[:port], nothing more
            if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(f"cors_origins: {origin!r} is not an origin such as "
                                 "http://127.0.0.1:8060 (scheme, host and port; no path)")


@dataclass(config=_STRICT)
class DistillConfig:
    """DMD runs (`edgeswitch distill`; see edgeswitch/dmd/)."""

    engine: Annotated[Literal["local", "ray"],
                      describe("local: this process; ray: Ray Data actor pools (on the [ray] "
                               "cluster)")] = "local"
    shard_size: Annotated[StrictInt, describe("clips per shard: the unit of resume", ge=1)] = 2048
    batch_size: Annotated[StrictInt, describe("clips per model call or HTTP request",
                                              ge=1)] = 256
    cloud_timeout_ms: Annotated[Float, describe("how long a DMD run waits for the cloud's answer "
                                                "to a request, retries included, before the "
                                                "cloud counts as down (offline work: a slow "
                                                "cloud is waited for)", gt=0)] = 60_000.0
    workers: Annotated[StrictInt, describe("ray: actors per pool (edge and cloud)", ge=1)] = 2
    cpus_per_worker: Annotated[Float, describe("ray: CPUs each actor reserves", gt=0)] = 1.0


@dataclass(config=_STRICT)
class RayConfig:
    """The Ray cluster of `serve-cloud --server ray` and `distill --engine ray`."""

    address: Annotated[StrictStr, describe("a running cluster to join (auto, HOST:6379); "
                                           "empty: start a local one")] = ""


@dataclass(config=_STRICT)
class VideoConfig:
    """How a video becomes clips (`watch`, `distill --data VIDEOS`; see video/source.py)."""

    clip_s: Annotated[Float, describe("clip length in seconds (4: the NFD fall head reads 32 "
                                      "poses at 8 fps)", gt=0)] = 4.0
    stride_s: Annotated[Float, describe("seconds between clip starts", gt=0)] = 1.0
    frames: Annotated[StrictInt, describe("frames kept per clip", ge=1)] = 32
    fps_cap: Annotated[Float, describe("decode every frame, keep at most this many per second",
                                       gt=0)] = 8.0
    size: Annotated[StrictStr, describe("resize frames to WxH, e.g. 640x360 (empty: as "
                                        "decoded)", pattern=r"^(|\d+x\d+)$")] = ""
    vlm_deadline_ms: Annotated[Float, describe("watch: per clip, how long a VLM cloud "
                                               "(--cloud-url) is waited for before the edge "
                                               "answer stands (a VLM is slow; [runtime] "
                                               "deadline_ms is a sensor cloud's)",
                                               gt=0)] = 60_000.0
    vlm_frames: Annotated[StrictInt, describe("VLM cloud: images sent per clip", ge=1)] = 4
    constraint: Annotated[VlmConstraint,
                          describe("VLM cloud: how the answer is constrained (guided_choice "
                                   "for vLLM)")] = "json_schema"
    logprobs: Annotated[StrictBool, describe("VLM cloud: ask for logprobs (--no-logprobs for "
                                             "servers that refuse them)")] = True
    # watch: what leaves the device (privacy), the asynchronous cloud, events and alerts
    vlm_size: Annotated[StrictInt, describe("VLM cloud: longer side in pixels of each image "
                                            "sent (smaller sends less of the room)",
                                            ge=16)] = 448
    vlm_crop: Annotated[StrictBool, describe("watch, VLM cloud: send only the tracked person's "
                                             "box (MoveNet's, padded), not the whole frame; a "
                                             "clip with nobody found is not sent")] = False
    confidence: Annotated[Float, describe("watch without --switcher: offload a clip when the "
                                          "edge's top probability is below this, and every "
                                          "clip the edge calls a fall", ge=0, le=1)] = 0.8
    realtime: Annotated[StrictBool, describe("watch: pace a file at its frame rate, as a live "
                                             "camera would deliver it")] = False
    cloud_workers: Annotated[StrictInt, describe("watch: cloud requests in flight at once",
                                                 ge=1)] = 2
    cloud_queue: Annotated[StrictInt, describe("watch: offloaded clips waiting for a cloud "
                                               "worker; when full the oldest is dropped",
                                               ge=1)] = 8
    drain_s: Annotated[Float, describe("watch: at the end, how long pending cloud answers are "
                                       "awaited", ge=0)] = 30.0
    cloud_wait: Annotated[StrictBool, describe("watch: a stream's next clip waits for its "
                                               "pending cloud answer (a recording replayed "
                                               "offline gets the decisions of `benchmark`; "
                                               "never for a live source)")] = False
    event_on: Annotated[Float, describe("fall events: a clip with P(fall) at least this opens "
                                        "an event", gt=0, le=1)] = 0.5
    event_off: Annotated[Float, describe("fall events: clips below this P(fall) count towards "
                                         "the end of an event", ge=0, le=1)] = 0.3
    event_gap: Annotated[StrictInt, describe("fall events: consecutive clips below event_off "
                                             "that end an event", ge=1)] = 2
    alert_retries: Annotated[StrictInt, describe("alerts: extra attempts per alert, with "
                                                 "doubling backoff", ge=0)] = 3
    alert_timeout_s: Annotated[Float, describe("alerts: per attempt, how long the receiver or "
                                               "command is waited for", gt=0)] = 5.0


@dataclass(config=_STRICT)
class PoseConfig:
    """`edgeswitch train-pose`: the pose-sequence edge model (see video/edge_models.py)."""

    epochs: Annotated[StrictInt, describe("training epochs", ge=1)] = 20
    width: Annotated[StrictInt, describe("channels of the temporal CNN", ge=1)] = 32
    synthetic: Annotated[StrictInt, describe("SYNTHETIC sequences to generate when no --data "
                                             "is given", ge=10)] = 2000


@dataclass(config=_STRICT)
class RefreshConfig:
    """`edgeswitch refresh`: a new switcher from the decision log (pipeline/refresh.py)."""

    holdout: Annotated[Float, describe("share of the log, its latest clips, held back to "
                                       "compare old and new switchers", gt=0, lt=1)] = 0.3
    criterion: Annotated[Literal["auroc", "agreement"],
                         describe("label-free comparison on the held-back clips: auroc (does "
                                  "the score rank edge/answer agreement) or agreement (the "
                                  "hybrid's agreement with the answer at the operating "
                                  "point's offload rate)")] = "auroc"
    margin: Annotated[Float, describe("the new switcher must beat the old by more than this "
                                      "on the criterion", ge=0)] = 0.01
    min_shadow: Annotated[StrictInt, describe("fewest shadow clips with a cloud answer in "
                                              "each part of the log (the kept clips' only "
                                              "unbiased sample)", ge=1)] = 10


# the drift thresholds are constants, not fitted per deployment: say so wherever they show
_WATCH_TUNED = ("a constant: tuned once on the watch data's one calibration subject by "
                "benchmarks/drift.py; for other data or sensors set it from your own "
                "calibration recordings replayed as streams")


@dataclass(config=_STRICT)
class DriftConfig:
    """Drift alarm of `classify` and `watch` (edgeswitch/runtime/drift.py): a sliding window
    of switcher scores and edge classes tested against the operating point's reference."""

    enabled: Annotated[StrictBool, describe("test the live stream against the calibration "
                                            "reference")] = True
    window: Annotated[StrictInt, describe("clips in the sliding window", ge=20)] = 200
    test: Annotated[Literal["ks", "psi"], describe("ks: KS distance of the scores and total "
                                                   "variation of the class mix; psi: population "
                                                   "stability index of both")] = "ks"
    ks_threshold: Annotated[Float, describe("ks: alarm when the larger distance exceeds this "
                                            f"({_WATCH_TUNED})", gt=0, le=1)] = 0.73
    psi_threshold: Annotated[Float, describe("psi: alarm when the larger PSI exceeds this "
                                             f"({_WATCH_TUNED})", gt=0)] = 5.75
    every: Annotated[StrictInt, describe("clips between checks", ge=1)] = 20
    clear_after: Annotated[StrictInt, describe("consecutive passing checks that clear an alarm",
                                               ge=1)] = 5
    input_threshold: Annotated[Float, describe("alarm when the one-sided KS distance of the "
                                               "clips' novelty (per-channel mean and std vs the "
                                               "calibration clips) exceeds this (off without "
                                               f"raw calibration clips; {_WATCH_TUNED})",
                                               gt=0, le=1)] = 0.47


@dataclass(config=_STRICT)
class RunConfig:
    dataset: Annotated[StrictStr, describe("watch, basicmotions, or a path to .npz / .ts / "
                                           ".arff / a UEA folder")] = "watch"
    seed: Annotated[StrictInt, describe("seed for splits and training")] = 0
    splits: Annotated[list[Float], describe("train, pool, calib, test shares of the groups",
                                            min_length=4, max_length=4)] = \
        field(default_factory=lambda: [0.5, 0.2, 0.1, 0.2])
    split_groups: Annotated[dict[str, list[str]], describe("groups fixed to a split")] = \
        field(default_factory=dict)
    streams: Annotated[StreamMode, describe("which clips form a stream: recording (as the "
                                            "data set gives them), subject (each subject's "
                                            "recordings one after another, in a seeded random "
                                            "order) or none (every clip alone)")] = "subject"
    window_s: Annotated[Float, describe("sensor window, seconds", gt=0)] = 2.0
    stride_s: Annotated[Float, describe("sensor window stride, seconds", gt=0)] = 1.0
    edge: ModelConfig = field(default_factory=lambda: ModelConfig(
        arch="edge-cnn", arch_params={"width": 32, "layers": 3}, epochs=30))
    cloud: ModelConfig = field(default_factory=lambda: ModelConfig(
        arch="cloud-resnet", arch_params={"width": 64}, epochs=40))
    switcher: SwitcherConfig = field(default_factory=SwitcherConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    curve_points: Annotated[StrictInt, describe("offload-rate grid of the evaluation curves",
                                                ge=2)] = 101
    latency_calls: Annotated[StrictInt, describe("timed calls per part", ge=1)] = 300

    def __post_init__(self) -> None:
        if any(v <= 0 for v in self.splits):
            raise ValueError(f"splits must be 4 positive shares (train, pool, calib, test), "
                             f"got {self.splits}")

    def to_dict(self) -> dict:
        return asdict(self)


def preset(dataset: str) -> RunConfig:
    """Defaults for a data set. The smartwatch edge model is a low-power design: accelerometer
    only (the gyroscope is the power-hungry sensor on a watch) at half rate (25 Hz)."""
    cfg = RunConfig(dataset=dataset)
    name = dataset.lower()
    if name not in ("watch", "basicmotions"):
        # sensor-frame rotation assumes xyz channel triplets; unknown data may have none
        cfg.edge.rotate_deg = cfg.cloud.rotate_deg = 0.0
    if name == "watch":
        cfg.edge.arch_params.update(channels=[0, 1, 2], decimate=2)
        # test subjects 8-10 as in the reference figures of docs/method.md; 1-7 are dealt
        # out by `splits` among train, pool and calib
        cfg.split_groups = {"test": ["subject08", "subject09", "subject10"]}
    elif name == "basicmotions":  # 80 clips: small, fast models; every model is near 100%
        cfg.edge.arch_params.update(channels=[0, 1, 2], width=8, layers=2)
        cfg.edge.epochs = 40
        cfg.cloud.arch_params.update(width=16)
        cfg.cloud.epochs = 40
        cfg.switcher.epochs = 100
        cfg.latency_calls = 50
    return cfg


# free-form tables: a file's table replaces the preset's wholesale (their keys are data)
_FREE_FORM = ("arch_params", "split_groups")


def _merge(base: dict, values: dict) -> dict:
    """`values` over `base`, table by table. Unknown keys and types are left to the schema."""
    out = dict(base)
    for key, value in values.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and key not in _FREE_FORM:
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


def _nest(dotted: dict[str, Any]) -> dict:
    """{"runtime.deadline_ms": 5} -> {"runtime": {"deadline_ms": 5}}."""
    out: dict = {}
    for key, value in dotted.items():
        *tables, name = key.split(".")
        node = out
        for t in tables:
            node = node.setdefault(t, {})
        node[name] = value
    return out


# keys that were renamed: a file or caller that still gives one gets the new name in the error
RENAMED = {"distill.deadline_ms": "distill.cloud_timeout_ms",
           "video.deadline_ms": "video.vlm_deadline_ms",
           "serve.engine": "serve.server",
           "serve.ray_address": "ray.address",
           "distill.ray_address": "ray.address"}


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def from_values(cls, values: dict, source: str = ""):
    """Build config table `cls` from plain values (a file's, a flag's, an API caller's); a bad
    value is an error naming its key and the value."""
    try:
        return _adapter(cls).validate_python(values)
    except _PydanticError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].replace("Unexpected keyword argument", "unknown key")
            if err["type"] == "unexpected_keyword_argument" and key in RENAMED:
                msg = f"renamed: it is now {RENAMED[key]}"
            got = f" (got {err['input']!r})" if "input" in err and err["type"] != \
                "unexpected_keyword_argument" and not isinstance(err["input"], dict) else ""
            problems.append(f"{key}: {msg}{got}")
        raise EdgeSwitchError(f"config{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                **top) -> RunConfig:
    """The data set's preset, then the TOML file, then overrides (dotted keys such as
    "runtime.deadline_ms", and top-level keys as keywords); None values are ignored, so a flag
    left out keeps the file's value. Everything is validated once, at the end."""
    values: dict = {}
    source = ""
    if path is not None:
        source = f" {path}"
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgeSwitchError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise EdgeSwitchError(f"config file {path} is not valid TOML: {exc}") from None
    given = {**(overrides or {}), **{k: v for k, v in top.items() if v is not None}}
    dotted = {k: v for k, v in given.items() if v is not None}
    dataset = dotted.get("dataset", values.get("dataset", "watch"))
    if not isinstance(dataset, str):
        raise EdgeSwitchError(f"config{source}: dataset must be a string, got {dataset!r}")
    merged = _merge(_merge(asdict(preset(dataset)), values), _nest(dotted))
    return from_values(RunConfig, merged, source)


def validate(cfg):
    """Check a config (or one of its tables) again after code changed its fields; returns the
    validated copy."""
    return from_values(type(cfg), asdict(cfg))
