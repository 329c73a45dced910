"""Run an exported device artifact: numpy + onnxruntime (+ the HTTP cloud client), nothing else.

`DeviceRunner(DIR)` loads `device.json` and one of its graphs, keeps one state per stream
(least recently seen forgotten past `max_streams`, as runtime.states does) and runs the loop
device.json describes, one clip at a time: step, then observe. Each clip gives the row the
Python runtime gives (HybridResult.records) plus `offloaded`. An adaptive operating point's
controller runs here, on the graph's `trust` (device.controller). A cloud answer that comes
late is not in this loop (see device.json's `late_answers`).

Importable with numpy, onnxruntime, httpx and pydantic only (tests/test_device.py checks it):
it reaches no torch, scipy, pandas, pyarrow, matplotlib, scikit-learn, nor onnx itself.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.cloud.client import InProcessCloud, NoCloud, ask
from edgeswitch.data.clips import check_clip_range, check_clips
from edgeswitch.device import spec as S
from edgeswitch.device.controller import Controller
from edgeswitch.errors import DataError, EdgeSwitchError, ModelError
from edgeswitch.models.onnx_model import make_session

DEFAULT_STREAM = "default"


@dataclass
class DeviceState:
    """One stream's state between clips: what the graph reads and writes, tagged with the
    artifact it belongs to (`seen`: the clips routed so far, for the rows only)."""

    belief: np.ndarray   # [1, J, K] float32 log-probabilities
    age: float           # clips since the cloud last answered (S.NEVER: never)
    last: float          # class of that answer (-1: none)
    artifact_id: str
    seen: int = 0

    def to_dict(self) -> dict:
        return {"artifact_id": self.artifact_id, "belief": self.belief.tolist(),
                "age": self.age, "last": self.last, "seen": self.seen}

    @classmethod
    def from_dict(cls, d: dict) -> DeviceState:
        try:
            return cls(np.asarray(d["belief"], np.float32), float(d["age"]), float(d["last"]),
                       str(d["artifact_id"]), int(d.get("seen", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a device state ({exc})") from None


class DeviceRunner:
    """The artifact in folder `path` (`variant` "float" or "int8"), asking `cloud` (a cloud
    client, a model in this process, or None: no cloud, the edge answers every clip)."""

    def __init__(self, path: str | Path, variant: str = "float", cloud=None, threads: int = 1,
                 max_streams: int = 10_000) -> None:
        self.path = Path(path)
        self.spec = S.read_spec(self.path)
        if variant not in S.GRAPH_FILES:
            raise DataError(f"variant must be one of {sorted(S.GRAPH_FILES)}, got {variant!r}")
        if variant not in self.spec["graphs"]:
            raise DataError(f"{self.path}: the artifact has no {variant} graph (export it with "
                            "--int8)" if variant == "int8" else f"{self.path}: no {variant} graph")
        self.variant = variant
        self.artifact_id = str(self.spec["artifact_id"])
        self.session = self._open(self.spec["graphs"][variant], threads)
        self.classes: tuple[str, ...] = tuple(self.spec["classes"])
        self.clip_shape: tuple[int, int] = tuple(int(v) for v in self.spec["clip_shape"])
        self.input_bound = float(self.spec["input_bound"])
        rate = self.spec.get("sample_rate_hz")
        self.sample_rate_hz: float | None = None if rate is None else float(rate)
        state = self.spec["state"]
        self.j, self.k = int(state["J"]), int(state["K"])
        if self.k != len(self.classes):
            raise DataError(f"{self.path}: state K {self.k} but {len(self.classes)} classes")
        op = self.spec["operating_point"]
        self.threshold = float(self.spec["threshold"])
        self.controller = Controller(op["rate"], op["calib_quantiles"], op["step"],
                                     float(op.get("tie_tolerance", S.TIE))) \
            if op.get("adaptive") else None
        self.stateful = bool(self.spec.get("router", {}).get("stateful", True))
        self.cloud = self._cloud(cloud)
        self.max_streams = max_streams
        self._states: OrderedDict[str, DeviceState] = OrderedDict()

    # -- loading ---------------------------------------------------------------------------
    def _open(self, entry: dict, threads: int):
        f = self.path / entry["file"]
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise DataError(f"device graph not found: {f}") from None
        if S.sha256(data) != entry.get("sha256"):
            raise DataError(f"{f} is not the graph device.json describes (its SHA-256 "
                            "differs): export the bundle again, or copy the folder whole")
        session = make_session(data, threads, f"device graph {f.name}")
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get(S.META_ARTIFACT) != self.artifact_id:
            raise DataError(f"{f} belongs to artifact {meta.get(S.META_ARTIFACT)!r}, "
                            f"device.json to {self.artifact_id!r}")
        names = (tuple(i.name for i in session.get_inputs()),
                 tuple(o.name for o in session.get_outputs()))
        if names != (S.INPUT_NAMES, S.OUTPUT_NAMES):
            raise ModelError(f"{f}: inputs/outputs {names} are not a device graph's")
        return session

    def _cloud(self, cloud):
        if cloud is None:
            return NoCloud(self.classes)
        if not (hasattr(cloud, "request") or isinstance(cloud, InProcessCloud)):
            cloud = InProcessCloud(cloud)
        if tuple(cloud.classes_) != self.classes:
            raise ModelError(f"the cloud's classes {list(cloud.classes_)} are not the "
                             f"artifact's {list(self.classes)}")
        return cloud

    # -- states ----------------------------------------------------------------------------
    def initial_state(self) -> DeviceState:
        init = self.spec["initial_state"]
        return DeviceState(np.asarray(init["belief"], np.float32).reshape(1, self.j, self.k),
                           float(init["age"]), float(init["last"]), self.artifact_id)

    def check_state(self, state: DeviceState) -> DeviceState:
        """A state of this artifact, of its shape, with finite numbers; DataError otherwise."""
        if not isinstance(state, DeviceState):
            raise DataError(f"a device state is a DeviceState, got {type(state).__name__}")
        if state.artifact_id != self.artifact_id:
            raise DataError(f"the state belongs to artifact {state.artifact_id!r}, this is "
                            f"{self.artifact_id!r} (a state of another export)")
        b = np.asarray(state.belief)
        if b.shape != (1, self.j, self.k):
            raise DataError(f"state belief has shape {list(b.shape)}, this artifact's is "
                            f"[1, {self.j}, {self.k}]")
        if not np.isfinite(b).all() or not np.isfinite(state.age) or state.age < 0:
            raise DataError("state belief and age must be finite (age >= 0)")
        if state.last != int(state.last) or not -1 <= state.last < self.k:
            raise DataError(f"state last must be a class index or -1, got {state.last}")
        return state

    def state(self, stream: str = DEFAULT_STREAM) -> DeviceState:
        """The stream's state (a fresh one for a stream not held)."""
        st = self._states.get(stream)
        if st is None:
            return self.initial_state()
        self._states.move_to_end(stream)
        return st

    def set_state(self, stream: str, state: DeviceState) -> None:
        self._states[stream] = self.check_state(state)
        self._states.move_to_end(stream)
        while len(self._states) > self.max_streams:
            self._states.popitem(last=False)

    # -- the graph -------------------------------------------------------------------------
    def check_clip(self, clip) -> np.ndarray:
        """`[1, T, C]` float32 from one clip `[T, C]` (or `[1, T, C]`), checked."""
        X = np.asarray(clip) if not isinstance(clip, np.ndarray) else clip
        if X.ndim == 2:
            X = X[None]
        X = check_clips(X, "clip")
        if X.shape != (1, *self.clip_shape):
            raise DataError(f"clip: this artifact takes one clip [{self.clip_shape[0]}, "
                            f"{self.clip_shape[1]}] (T, C), got {list(np.shape(clip))}")
        return check_clip_range(X, self.input_bound, "clip")

    def check_rate(self, sample_rate_hz: float | None) -> None:
        """Clips sampled at `sample_rate_hz` (None: not said) are this artifact's to run; a
        DataError naming both rates otherwise (an artifact exported without --sample-rate
        checks nothing)."""
        if sample_rate_hz is None or self.sample_rate_hz is None:
            return
        try:
            rate = float(sample_rate_hz)
        except (TypeError, ValueError):
            raise DataError(f"sample_rate_hz must be a number (Hz), got {sample_rate_hz!r}") \
                from None
        if not math.isclose(rate, self.sample_rate_hz, rel_tol=1e-6):
            raise DataError(f"the clips are sampled at {rate:g} Hz, this artifact's model at "
                            f"{self.sample_rate_hz:g} Hz (device.json sample_rate_hz): resample "
                            "the clips to its rate")

    def run(self, X: np.ndarray, state: DeviceState, cloud_proba: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
        """One graph call on a checked clip `X [1, T, C]`: the outputs by name."""
        answered = cloud_proba is not None
        feed = {"clip": X, "belief": np.asarray(state.belief, np.float32),
                "age": np.asarray([state.age], np.float32),
                "last": np.asarray([state.last], np.float32),
                "cloud_proba": (np.asarray(cloud_proba, np.float32).reshape(1, self.k)
                                if answered else np.zeros((1, self.k), np.float32)),
                "cloud_mask": np.asarray([1.0 if answered else 0.0], np.float32),
                "threshold": np.asarray([self.threshold], np.float32)}
        return dict(zip(S.OUTPUT_NAMES, self.session.run(S.OUTPUT_NAMES, feed), strict=True))

    def _after(self, out: dict, before: DeviceState) -> DeviceState:
        return DeviceState(out["belief_next"], float(out["age_next"][0]),
                           float(out["last_next"][0]), self.artifact_id, before.seen + 1)

    # -- the loop --------------------------------------------------------------------------
    def classify_clip(self, clip, stream: str = DEFAULT_STREAM, clip_id: str = "0",
                      sample_rate_hz: float | None = None) -> dict:
        """One clip of `stream`: route it, ask the cloud if offloaded, move the state on
        (`sample_rate_hz`: the clip's, checked against the artifact's when given)."""
        t0 = time.monotonic()
        self.check_rate(sample_rate_hz)
        X = self.check_clip(clip)
        before = self.state(stream)
        out = self.run(X, before)
        trust = float(out["trust"][0])
        off = self.controller.decide(trust) if self.controller is not None \
            else bool(out["offload"][0])
        t_edge = time.monotonic()
        verified, reason, cloud_ms = True, None, 0.0
        if off:
            reply = ask(self.cloud, X, t0 + getattr(self.cloud, "deadline_s", float("inf")))
            cloud_ms = reply.latency_ms
            if reply.ok:
                out = self.run(X, before, reply.proba)
            else:
                verified, reason = False, str(reply.reason)
        self.set_state(stream, self._after(out, before))
        proba = out["answer"][0].astype(np.float64)
        total = (time.monotonic() - t0) * 1000
        # a per-clip router reads no state: its rows carry no cloud age (as the runtime's)
        age = None if before.age >= S.NEVER or not self.stateful else int(before.age)
        return {"clip_id": str(clip_id), "label": self.classes[int(np.argmax(proba))],
                "answered_by": "cloud" if off and verified else "edge", "verified": verified,
                "fallback_reason": reason, "switcher_score": trust, "offloaded": off,
                "latency_ms": {"edge": round((t_edge - t0) * 1000, 3),
                               "cloud": round(cloud_ms, 3), "total": round(total, 3)},
                "proba": {c: round(float(p), 6) for c, p in zip(self.classes, proba,
                                                                strict=True)},
                "stream": str(stream), "cloud_age": age}

    def classify(self, X, streams=None, ids=None, sample_rate_hz: float | None = None
                 ) -> list[dict]:
        """Rows for clips `X [n, T, C]` in order (`streams`: each clip's stream;
        `sample_rate_hz`: the clips', e.g. a ClipBatch's, checked when given)."""
        self.check_rate(sample_rate_hz)
        X = np.asarray(X)
        if X.ndim != 3:
            raise DataError(f"X: expected clips [n, T, C], got shape {list(X.shape)}")
        n = len(X)
        streams = [DEFAULT_STREAM] * n if streams is None else [str(s) for s in streams]
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        if len(streams) != n or len(ids) != n:
            raise EdgeSwitchError(f"streams and ids must name each of the {n} clips")
        return [self.classify_clip(X[i], streams[i], ids[i]) for i in range(n)]

    def close(self) -> None:
        if hasattr(self.cloud, "close"):
            self.cloud.close()
