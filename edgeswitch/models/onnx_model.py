"""Run a classifier exported to ONNX with onnxruntime: the form every trained model ships in."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeswitch.data.clips import DEFAULT_INPUT_BOUND, check_clips
from edgeswitch.errors import ModelError
from edgeswitch.models.base import ModelOutput

META_PREFIX = "edgeswitch."


def make_session(onnx_bytes: bytes, threads: int = 1, who: str = "ONNX model"):
    """The one way edgeswitch opens an ONNX graph: onnxruntime on the CPU, `threads` intra-op
    threads and one inter-op thread (latency figures then describe that many cores, as on a
    device), warnings off. A graph onnxruntime refuses raises ModelError naming `who`."""
    import onnxruntime as ort

    if not isinstance(threads, int) or threads < 1:
        raise ModelError(f"{who}: threads must be an int >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        raise ModelError(f"{who}: onnxruntime cannot load the graph "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` of a serialised protobuf, and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of one serialised protobuf message: an int for a
    varint or fixed-width field, the bytes of a length-delimited one. ValueError if malformed."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("not a protobuf message (field number 0)")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 2, 5):  # fixed 64 bits, length-delimited, fixed 32 bits
            if wire == 2:
                size, pos = _varint(buf, pos)
            else:
                size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise ValueError("truncated protobuf")
            chunk = buf[pos:pos + size]
            value = chunk if wire == 2 else int.from_bytes(chunk, "little")
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _packed(buf: bytes) -> list[int]:
    """The values of a packed repeated varint field."""
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def read_model_proto(blob: bytes) -> tuple[dict[str, str], int]:
    """What edgeswitch reads of an ONNX file besides running it, without the `onnx` package
    (a device has only onnxruntime): its metadata_props, and the element count of its float
    initializers (the parameters). Field numbers from onnx.proto: ModelProto graph = 7,
    metadata_props = 14 (key = 1, value = 2); GraphProto initializer = 5; TensorProto dims =
    1, data_type = 2 (FLOAT = 1). Raises ValueError for bytes that are not a ModelProto."""
    meta: dict[str, str] = {}
    n_params = 0
    graphs = 0
    for number, value in _fields(blob):
        if number == 14 and isinstance(value, bytes):
            entry = dict(_fields(value))
            meta[bytes(entry.get(1, b"")).decode()] = bytes(entry.get(2, b"")).decode()
        elif number == 7 and isinstance(value, bytes):
            graphs += 1
            for g_number, tensor in _fields(value):
                if g_number != 5 or not isinstance(tensor, bytes):
                    continue
                dims, dtype = [], 0  # data_type absent: the proto default, UNDEFINED
                for t_number, t_value in _fields(tensor):
                    if t_number == 1:
                        dims += _packed(t_value) if isinstance(t_value, bytes) else [t_value]
                    elif t_number == 2:
                        dtype = int(t_value)
                if dtype == 1:
                    n_params += math.prod(dims)
    if graphs == 0:
        raise ValueError("no graph in it")
    return meta, n_params


def _bound(text: str | None) -> float:
    try:
        bound = float(text) if text is not None else DEFAULT_INPUT_BOUND
    except ValueError:
        raise ModelError(f"ONNX model has malformed edgeswitch metadata input_bound "
                         f"{text!r}") from None
    if not (bound > 0 and np.isfinite(bound)):
        raise ModelError(f"ONNX model metadata input_bound must be a positive finite number, "
                         f"got {text!r}")
    return bound


class OnnxClassifier:
    """A fitted clip classifier backed by an ONNX graph.

    The graph takes `clips [n, T, C]` float32 and returns `proba [n, K]` and `embedding [n, E]`.
    Class names, clip shape and cost figures travel inside the file as metadata, so a model file
    is self-describing. `threads=1` by default: latency figures then describe one core, as on a
    device.
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1) -> None:
        try:
            blob = model if isinstance(model, bytes) else Path(model).read_bytes()
            props, n_params = read_model_proto(blob)
        except FileNotFoundError:
            raise ModelError(f"model file not found: {model}") from None
        except ValueError as exc:  # not a protobuf ModelProto
            where = "<bytes>" if isinstance(model, bytes) else model
            raise ModelError(f"cannot read ONNX model {where}: {exc}") from None
        meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
        missing = {"classes", "clip_shape"} - meta.keys()
        if missing:
            raise ModelError(f"ONNX model lacks edgeswitch metadata {sorted(missing)}; export it "
                             "with edgeswitch.models.train.export_onnx")
        try:
            self.classes_: tuple[str, ...] = tuple(str(c) for c in json.loads(meta["classes"]))
            self.clip_shape_: tuple[int, int] = tuple(int(v) for v in
                                                      json.loads(meta["clip_shape"]))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ModelError(f"ONNX model has malformed edgeswitch metadata: {exc}") from None
        if len(self.clip_shape_) != 2:
            raise ModelError(f"ONNX model metadata clip_shape must be [T, C], got "
                             f"{list(self.clip_shape_)}")
        self.name: str = meta.get("name", "onnx-model")
        self.macs_: int | None = int(meta["macs"]) if "macs" in meta else None
        # |x| <= input_bound_: max |x| of the training clips times a margin, recorded at export
        # (data.clips.input_bound); a model exported before that takes the documented default
        self.input_bound_: float = _bound(meta.get("input_bound"))
        self.meta_ = meta
        self.n_params_ = n_params
        self.onnx_bytes_ = blob  # the file as written: its hash names the model in records
        self.session_ = make_session(self.onnx_bytes_, threads, f"model '{self.name}'")
        outputs = [o.name for o in self.session_.get_outputs()]
        if outputs[:2] != ["proba", "embedding"]:
            raise ModelError(f"ONNX model outputs must be ['proba', 'embedding'], got {outputs}")
        self._input = self.session_.get_inputs()[0].name

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = check_clips(X)
        if X.shape[1:] != self.clip_shape_:
            raise ModelError(
                f"model '{self.name}' expects clips [n, {self.clip_shape_[0]}, "
                f"{self.clip_shape_[1]}] (T, C), got {list(X.shape)}"
            )
        return X

    def run_raw(self, X: np.ndarray) -> ModelOutput:
        """One onnxruntime call, no validation: the hot path for latency measurement."""
        proba, emb = self.session_.run(None, {self._input: X})[:2]
        return ModelOutput(proba=proba, embedding=emb)

    def outputs(self, X: np.ndarray, batch_size: int = 1024) -> ModelOutput:
        X = self._check(X)
        parts = [self.run_raw(X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
        return ModelOutput(proba=np.concatenate([p.proba for p in parts]),
                           embedding=np.concatenate([p.embedding for p in parts]))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.outputs(X).proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        """int64 indices into `classes_`."""
        return self.outputs(X).label

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of this call's own (two runs may save the same cached model at
        # once), then an atomic rename: a killed run never leaves a half-written model behind
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(self.onnx_bytes_)
        tmp.replace(path)
        return path

    def __repr__(self) -> str:
        return (f"OnnxClassifier(name={self.name!r}, classes={len(self.classes_)}, "
                f"params={self.n_params_})")
