"""Run configuration: dataclasses with per-data-set defaults, loadable from a TOML file.

A config file only needs the keys it changes; see configs/watch.toml for every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from edgeswitch.errors import EdgeSwitchError


@dataclass
class ModelConfig:
    arch: str = "edge-cnn"
    arch_params: dict = field(default_factory=dict)
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    rotate_deg: float = 30.0
    ensemble: int = 1                  # networks averaged into one model (seeds seed, seed+1..)


@dataclass
class SwitcherConfig:
    family: str = "linear"                    # "linear" | "mlp" | "gbt" (see switcher/)
    target: str = "hard"                      # "hard" (agreement) | "soft" (alignment) | "gain"
    hidden: int = 32                          # mlp: hidden units
    features: list[str] = field(default_factory=lambda: ["proba", "confidence", "embedding"])
    epochs: int = 400                         # mlp: upper bound (group CV picks the number)
    l2: float = 10.0                          # linear: weight penalty (confidence unpenalised)
    augment_views: int = 0                    # DMD on this many rotated views per pool clip


@dataclass
class FusionConfig:
    """How an offloaded clip is answered (see switcher/fusion.py)."""

    method: str = "dmd"                       # "none" (the cloud) | "dmd" (fitted, no labels)
                                              # | "fixed" (edge_weight as given)
    edge_weight: float = 1.0                  # fixed: the edge's weight in the log-linear fusion


@dataclass
class BenchmarkConfig:
    """`edgeswitch benchmark`: cross-validated evaluation of every router."""

    folds: int = 5                            # every group tested once per repeat
    repeats: int = 1                          # re-deal the folds with other seeds
    abc_members: int = 3                      # edge models in the Agreement-Based Cascading
                                              # ensemble (the deployed edge is one of them)
    bootstrap: int = 2000                     # resamples of folds for the confidence intervals


@dataclass
class CalibrationConfig:
    mode: str = "offload"                    # "offload" | "budget" | "disagreement"
    rate: float = 0.5                        # offload mode: share of clips offloaded
    budget: float = 0.5                      # budget mode: cost per clip as a fraction of cloud
    epsilon: float = 0.05                    # disagreement mode: max disagreement among kept
    delta: float = 0.1                       # ... holding with probability >= 1 - delta
    grid: int = 40                           # candidate thresholds (pool-score quantiles)
    adaptive: bool = True                    # offload/budget: hold the rate on the live stream
    step: float = 0.01                       # ... threshold step per clip (see calibrate.py)


@dataclass
class RuntimeConfig:
    """How the edge reaches the cloud over the network (see edgeswitch.runtime.remote)."""

    protocol: str = "native"                 # "native" (/v1/classify) | "openai" (chat API)
    deadline_ms: float = 500.0               # per clip, from arrival to answer
    retries: int = 2                         # extra attempts, only while the deadline allows
    backoff_ms: float = 20.0                 # first retry waits up to this (full jitter) ...
    backoff_max_ms: float = 200.0            # ... doubling per retry, capped here
    breaker_failures: int = 5                # consecutive failures that open the circuit
    breaker_reset_s: float = 5.0             # open -> half-open (one probe) after this long


@dataclass
class ServeConfig:
    """The cloud model server (see edgeswitch.serving)."""

    max_batch: int = 32                      # most clips gathered into one model run
    max_wait_ms: float = 0.0                 # extra wait for a batch to fill (0: run what
                                             # queued during the last run, adding no latency)
    max_body_mb: float = 16.0                # larger requests get 413
    max_clips: int = 1024                    # clips per request
    threads: int = 1                         # onnxruntime threads per model run


@dataclass
class DistillConfig:
    """Sharded DMD runs (`edgeswitch distill --out FOLDER`; see edgeswitch.dmd.shards)."""

    engine: str = "local"                    # "local" (this process) | "ray" (Ray Data)
    shard_size: int = 2048                   # clips per shard: the unit of resume
    batch_size: int = 256                    # clips per model call or HTTP request
    workers: int = 2                         # ray: actors per pool (edge and cloud)
    cpus_per_worker: float = 1.0             # ray: CPUs each actor reserves
    ray_address: str = ""                    # ray: a running cluster; "" = start a local one


@dataclass
class RunConfig:
    dataset: str = "watch"
    seed: int = 0
    splits: list[float] = field(default_factory=lambda: [0.5, 0.2, 0.1, 0.2])
    split_groups: dict[str, list[str]] = field(default_factory=dict)  # fixed assignments
    window_s: float = 2.0
    stride_s: float = 1.0
    edge: ModelConfig = field(default_factory=lambda: ModelConfig(
        arch="edge-cnn", arch_params={"width": 32, "layers": 3}, epochs=30))
    cloud: ModelConfig = field(default_factory=lambda: ModelConfig(
        arch="cloud-resnet", arch_params={"width": 64}, epochs=40))
    switcher: SwitcherConfig = field(default_factory=SwitcherConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    curve_points: int = 101
    latency_calls: int = 300

    def to_dict(self) -> dict:
        return asdict(self)


ARCHS = ("edge-cnn", "cloud-resnet")  # names in edgeswitch.models.nets (no torch import here)


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


def _merge(obj, values: dict, where: str):
    known = {f.name: f for f in fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise EdgeSwitchError(f"config: unknown key '{where}{key}'; known: {sorted(known)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise EdgeSwitchError(f"config: '{where}{key}' must be a table")
            _merge(current, value, f"{where}{key}.")
        elif isinstance(current, dict):  # a table replaces the preset's table wholesale
            if not isinstance(value, dict):
                raise EdgeSwitchError(f"config: '{where}{key}' must be a table")
            setattr(obj, key, dict(value))
        else:
            setattr(obj, key, value)
    return obj


def load_config(path: str | Path | None = None, **overrides) -> RunConfig:
    """Preset for the data set, then the TOML file, then non-None keyword overrides."""
    values: dict = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgeSwitchError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise EdgeSwitchError(f"config file {path} is not valid TOML: {exc}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    dataset = overrides.get("dataset", values.get("dataset", "watch"))
    cfg = _merge(preset(str(dataset)), values, "")
    return validate(_merge(cfg, overrides, ""))


def validate(cfg: RunConfig) -> RunConfig:
    """Refuse settings that would fail deep inside a run, with the key's name."""
    sp = cfg.splits
    _need(isinstance(sp, list | tuple) and len(sp) == 4
          and all(isinstance(v, int | float) and v > 0 for v in sp),
          f"splits must be 4 positive shares (train, pool, calib, test), got {sp!r}")
    for role in ("edge", "cloud"):
        m = getattr(cfg, role)
        _need(m.arch in ARCHS, f"{role}.arch must be one of {list(ARCHS)}, got {m.arch!r}")
        _need(isinstance(m.epochs, int) and m.epochs >= 1, f"{role}.epochs must be >= 1")
        _need(m.lr > 0 and m.batch_size >= 2, f"{role}.lr must be > 0, batch_size >= 2")
        _need(isinstance(m.ensemble, int) and m.ensemble >= 1, f"{role}.ensemble must be >= 1")
    sc = cfg.switcher
    _need(sc.family in ("linear", "mlp", "gbt"),
          f"switcher.family must be linear, mlp or gbt, got {sc.family!r}")
    _need(sc.target in ("hard", "soft", "gain"),
          f"switcher.target must be 'hard', 'soft' or 'gain', got {sc.target!r}")
    _need(sc.epochs >= 1 and sc.hidden >= 1, "switcher.epochs and switcher.hidden must be >= 1")
    _need(isinstance(sc.augment_views, int) and sc.augment_views >= 0,
          "switcher.augment_views must be an int >= 0")
    _need(sc.l2 >= 0, "switcher.l2 must be >= 0")
    _need(cfg.fusion.method in ("none", "dmd", "fixed"),
          f"fusion.method must be none, dmd or fixed, got {cfg.fusion.method!r}")
    _need(cfg.fusion.edge_weight >= 0, "fusion.edge_weight must be >= 0")
    b = cfg.benchmark
    _need(isinstance(b.folds, int) and b.folds >= 2, "benchmark.folds must be an int >= 2")
    _need(isinstance(b.repeats, int) and b.repeats >= 1, "benchmark.repeats must be >= 1")
    _need(isinstance(b.abc_members, int) and b.abc_members >= 2,
          "benchmark.abc_members must be an int >= 2")
    _need(isinstance(b.bootstrap, int) and b.bootstrap >= 100, "benchmark.bootstrap >= 100")
    c = cfg.calibration
    _need(c.mode in ("offload", "budget", "disagreement"),
          f"calibration.mode must be offload, budget or disagreement, got {c.mode!r}")
    _need(0 <= c.rate <= 1, "calibration.rate must be within [0, 1]")
    _need(0 < c.epsilon < 1 and 0 < c.delta < 1, "calibration.epsilon, delta within (0, 1)")
    _need(isinstance(c.grid, int) and c.grid >= 1, "calibration.grid must be >= 1")
    _need(c.step > 0, "calibration.step must be > 0")
    _need(cfg.window_s > 0 and cfg.stride_s > 0, "window_s and stride_s must be > 0")
    validate_runtime(cfg.runtime)
    validate_serve(cfg.serve)
    validate_distill(cfg.distill)
    return cfg


def validate_distill(d: DistillConfig) -> DistillConfig:
    _need(d.engine in ("local", "ray"), f"distill.engine must be 'local' or 'ray', got "
          f"{d.engine!r}")
    for key in ("shard_size", "batch_size", "workers"):
        _need(isinstance(getattr(d, key), int) and getattr(d, key) >= 1,
              f"distill.{key} must be an int >= 1")
    _need(d.cpus_per_worker > 0, "distill.cpus_per_worker must be > 0")
    return d


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise EdgeSwitchError(f"config: {msg}")


def validate_runtime(r: RuntimeConfig) -> RuntimeConfig:
    _need(r.protocol in ("native", "openai"),
          f"runtime.protocol must be 'native' or 'openai', got {r.protocol!r}")
    _need(r.deadline_ms > 0, "runtime.deadline_ms must be > 0")
    _need(isinstance(r.retries, int) and r.retries >= 0, "runtime.retries must be an int >= 0")
    _need(0 <= r.backoff_ms <= r.backoff_max_ms,
          "runtime.backoff_ms must be >= 0 and <= runtime.backoff_max_ms")
    _need(isinstance(r.breaker_failures, int) and r.breaker_failures >= 1,
          "runtime.breaker_failures must be an int >= 1")
    _need(r.breaker_reset_s > 0, "runtime.breaker_reset_s must be > 0")
    return r


def validate_serve(s: ServeConfig) -> ServeConfig:
    _need(isinstance(s.max_batch, int) and s.max_batch >= 1, "serve.max_batch must be >= 1")
    _need(s.max_wait_ms >= 0, "serve.max_wait_ms must be >= 0")
    _need(s.max_body_mb > 0, "serve.max_body_mb must be > 0")
    _need(isinstance(s.max_clips, int) and s.max_clips >= 1, "serve.max_clips must be >= 1")
    _need(isinstance(s.threads, int) and s.threads >= 1, "serve.threads must be >= 1")
    return s
