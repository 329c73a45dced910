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

import numpy as np

from edgeswitch.data.clips import check_clip_range, check_clips
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


def decode_clips(payload: dict, clip_shape: tuple[int, int] | None, max_clips: int,
                 max_bytes: int | None = None, bound: float | None = None) -> np.ndarray:
    """The native encoding back to `[n, T, C]` float32, checked against the model's clip shape
    and input range (`|x| <= bound`). The declared shape is checked against `max_clips`, the
    clip shape and `max_bytes` before anything is decoded or allocated."""
    if not isinstance(payload, dict):
        raise WireError("'clips' must be an object with shape, dtype and b64", "bad_clips")
    shape, dtype, data = payload.get("shape"), payload.get("dtype", "float32"), payload.get("b64")
    if dtype not in ("float32", "<f4"):
        raise WireError(f"clips dtype must be float32, got {_short(dtype)}", "bad_dtype")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)):
        raise WireError(f"clips shape must be [n, T, C] non-negative integers, got "
                        f"{_short(shape)}", "bad_shape")
    if not isinstance(data, str):
        raise WireError("clips.b64 must be a base64 string", "bad_base64", 400)
    expected = check_declared_shape(shape, 4, clip_shape, max_clips, max_bytes)
    raw = _b64(data, "clips.b64")
    if len(raw) != expected:
        raise WireError(f"clips.b64 holds {len(raw)} bytes, shape {shape} float32 needs "
                        f"{expected}", "bad_shape")
    X = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return check_clip_array(X, clip_shape, max_clips, bound)


def _short(value: object, limit: int = 80) -> str:
    """A client's value in a message, cut short (an error never echoes a whole body)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_declared_shape(shape, itemsize: int, clip_shape: tuple[int, int] | None,
                         max_clips: int, max_bytes: int | None) -> int:
    """The bytes a declared `[n, T, C]` needs, refused before any allocation: more clips than
    `max_clips` or more bytes than `max_bytes` is a 413, a clip shape the model does not take
    or an empty one a 422. Python ints: a shape of 2**63 or 10**30 is compared, not overflowed."""
    n, t, c = (int(v) for v in shape)
    _check_count(n, max_clips)
    if clip_shape is not None and (t, c) != tuple(clip_shape):
        raise WireError(f"clips must be [n, {clip_shape[0]}, {clip_shape[1]}] (T, C) for this "
                        f"model, got {_short(list(shape))}", "bad_shape")
    if not (n and t and c):
        raise WireError(f"clips: empty clips array, shape {_short(list(shape))}", "empty")
    nbytes = n * t * c * itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise WireError(f"clips of shape {_short(list(shape))} need {nbytes} bytes; the server "
                        f"takes at most {max_bytes}", "too_large", 413)
    return nbytes


def encode_npy_data_url(clip: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(clip, dtype="<f4"), allow_pickle=False)
    return NPY_DATA_PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_npy_data_url(url: str, clip_shape: tuple[int, int] | None,
                        max_bytes: int | None = None, bound: float | None = None) -> np.ndarray:
    """One clip `[T, C]` (or `[1, T, C]`) from a `.npy` data URL, as `[1, T, C]` float32. The
    `.npy` header is read and checked (shape against the clip shape and `max_bytes`, dtype)
    before the array is built, so a header claiming 10**11 rows allocates nothing."""
    if not isinstance(url, str) or not url.startswith(NPY_DATA_PREFIX):
        raise WireError(f"a clip file part must be a '{NPY_DATA_PREFIX}...' data URL",
                        "bad_content_part", 400)
    raw = _b64(url[len(NPY_DATA_PREFIX):], "the clip's file_data")
    shape, fortran, dtype, offset = _npy_header(raw)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] != 1:
        raise WireError(f"a chat request carries one clip [T, C], got shape "
                        f"{_short(list(shape))}", "bad_shape")
    expected = check_declared_shape(shape, dtype.itemsize, clip_shape, 1, max_bytes)
    data = raw[offset:]
    if len(data) != expected:
        raise WireError(f"the clip's .npy file holds {len(data)} data bytes, its header "
                        f"(shape {list(shape)}, {dtype}) needs {expected}", "bad_npy", 400)
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    with np.errstate(over="ignore", invalid="ignore"):  # out of float32's range: inf, refused
        X = arr.astype(np.float32)
    return check_clip_array(X, clip_shape, 1, bound)


def _npy_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a `.npy` file, read without its data."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise WireError(f"the clip's file_data is not a valid .npy file: {_short(str(exc))}",
                        "bad_npy", 400) from None
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.shape or dtype.names:
        raise WireError(f"the clip must hold numbers, got dtype {_short(str(dtype))}",
                        "bad_dtype")
    return tuple(int(v) for v in shape), bool(fortran), dtype, f.tell()


def _check_count(n: int, max_clips: int) -> None:
    if n > max_clips:
        raise WireError(f"{n} clips in one request; the server takes at most {max_clips}",
                        "too_many_clips", 413)


def check_clip_array(X: np.ndarray, clip_shape: tuple[int, int] | None,
                     max_clips: int, bound: float | None = None) -> np.ndarray:
    """Decoded clips: rank, count, clip shape, finite, and within `|x| <= bound` (the model's
    input range, see data.clips) when one is given."""
    if X.ndim != 3:
        raise WireError(f"clips must be [n, T, C], got shape {list(X.shape)}", "bad_shape")
    _check_count(X.shape[0], max_clips)
    if clip_shape is not None and X.shape[0] and tuple(X.shape[1:]) != tuple(clip_shape):
        raise WireError(f"clips must be [n, {clip_shape[0]}, {clip_shape[1]}] (T, C) for this "
                        f"model, got {list(X.shape)}", "bad_shape")
    try:
        X = check_clips(X, "clips")
    except DataError as exc:  # rank and dtype are checked above: empty or not finite is left
        raise WireError(str(exc), "non_finite" if X.size else "empty") from None
    if bound is not None:
        try:
            check_clip_range(X, bound, "clips")
        except DataError as exc:
            raise WireError(str(exc), "out_of_range") from None
    return X
