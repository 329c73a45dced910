"""How clips and answers travel over HTTP. numpy only: the edge client imports this too.

Two encodings of a clip batch `[n, T, C]` float32:
- native `/v1/classify`: `{"shape": [n, T, C], "dtype": "float32", "b64": "..."}`, the raw
  little-endian bytes in base64 (compact, language-neutral);
- OpenAI chat: one clip per request as a standard `file` content part whose `file_data` is a
  `data:application/x-npy;base64,...` URL holding a `.npy` file (shape and dtype in its header).

Every decoding error is a `WireError` carrying the HTTP status and a short code, so the server
answers 4xx with a message that names the problem instead of failing inside numpy.
"""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np

from edgeswitch.data.clips import check_clips
from edgeswitch.errors import DataError

NPY_MEDIA_TYPE = "application/x-npy"
NPY_DATA_PREFIX = f"data:{NPY_MEDIA_TYPE};base64,"


class WireError(DataError):
    """A request that cannot be decoded: `status` is the HTTP status to answer with."""

    def __init__(self, message: str, code: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def encode_clips(X: np.ndarray) -> dict:
    X = np.ascontiguousarray(X, dtype="<f4")
    return {"shape": list(X.shape), "dtype": "float32",
            "b64": base64.b64encode(X.tobytes()).decode("ascii")}


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise WireError(f"{what} is not valid base64", "bad_base64", 400) from None


def decode_clips(payload: dict, clip_shape: tuple[int, int] | None, max_clips: int) -> np.ndarray:
    """The native encoding back to `[n, T, C]` float32, checked against the model's clip shape."""
    if not isinstance(payload, dict):
        raise WireError("'clips' must be an object with shape, dtype and b64", "bad_clips")
    shape, dtype, data = payload.get("shape"), payload.get("dtype", "float32"), payload.get("b64")
    if dtype not in ("float32", "<f4"):
        raise WireError(f"clips dtype must be float32, got {dtype!r}", "bad_dtype")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)):
        raise WireError(f"clips shape must be [n, T, C] non-negative integers, got {shape!r}",
                        "bad_shape")
    if not isinstance(data, str):
        raise WireError("clips.b64 must be a base64 string", "bad_base64", 400)
    _check_count(shape[0], max_clips)
    raw = _b64(data, "clips.b64")
    expected = math.prod(shape) * 4
    if len(raw) != expected:
        raise WireError(f"clips.b64 holds {len(raw)} bytes, shape {shape} float32 needs "
                        f"{expected}", "bad_shape")
    X = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return check_clip_array(X, clip_shape, max_clips)


def encode_npy_data_url(clip: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(clip, dtype="<f4"), allow_pickle=False)
    return NPY_DATA_PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_npy_data_url(url: str, clip_shape: tuple[int, int] | None) -> np.ndarray:
    """One clip `[T, C]` (or `[1, T, C]`) from a `.npy` data URL, as `[1, T, C]` float32."""
    if not isinstance(url, str) or not url.startswith(NPY_DATA_PREFIX):
        raise WireError(f"a clip file part must be a '{NPY_DATA_PREFIX}...' data URL",
                        "bad_content_part", 400)
    raw = _b64(url[len(NPY_DATA_PREFIX):], "the clip's file_data")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise WireError(f"the clip's file_data is not a valid .npy file: {exc}", "bad_npy",
                        400) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise WireError(f"the clip must hold numbers, got dtype {getattr(arr, 'dtype', '?')}",
                        "bad_dtype")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != 1:
        raise WireError(f"a chat request carries one clip [T, C], got shape {list(arr.shape)}",
                        "bad_shape")
    return check_clip_array(arr.astype(np.float32), clip_shape, 1)


def _check_count(n: int, max_clips: int) -> None:
    if n > max_clips:
        raise WireError(f"{n} clips in one request; the server takes at most {max_clips}",
                        "too_many_clips", 413)


def check_clip_array(X: np.ndarray, clip_shape: tuple[int, int] | None,
                     max_clips: int) -> np.ndarray:
    if X.ndim != 3:
        raise WireError(f"clips must be [n, T, C], got shape {list(X.shape)}", "bad_shape")
    _check_count(X.shape[0], max_clips)
    if clip_shape is not None and X.shape[0] and tuple(X.shape[1:]) != tuple(clip_shape):
        raise WireError(f"clips must be [n, {clip_shape[0]}, {clip_shape[1]}] (T, C) for this "
                        f"model, got {list(X.shape)}", "bad_shape")
    try:
        return check_clips(X, "clips")
    except DataError as exc:  # rank and dtype are checked above: empty or not finite is left
        raise WireError(str(exc), "non_finite" if X.size else "empty") from None
