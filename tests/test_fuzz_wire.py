"""Property tests (hypothesis) of the wire decoder and the clip validator: whatever a client
sends, decoding either returns clips the model can take or raises a WireError with a 4xx
status (never a numpy error, never an allocation the body could not hold)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeswitch.cloud.wire import (
    NPY_DATA_PREFIX,
    WireError,
    decode_clips,
    decode_npy_data_url,
    encode_clips,
    encode_npy_data_url,
)
from edgeswitch.data.clips import check_clip_range, check_clips
from edgeswitch.errors import DataError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIP = (5, 3)
MAX_BYTES = 1 << 16
BOUND = 1e6

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
huge_ints = st.integers(min_value=-2, max_value=2**70) | st.sampled_from(
    [0, 1, 5, 3, 2**31, 2**40, 2**63, 2**64, 10**30])
shapes = st.lists(huge_ints, min_size=0, max_size=4) | json_values


def _accepted(X: np.ndarray, clip_shape, max_clips: int) -> None:
    """What a successful decode guarantees the model."""
    assert X.dtype == np.float32 and X.ndim == 3 and 1 <= len(X) <= max_clips
    assert clip_shape is None or X.shape[1:] == clip_shape
    assert X.nbytes <= MAX_BYTES and np.isfinite(X).all() and np.abs(X).max() <= BOUND


def _refused(exc: WireError) -> None:
    assert 400 <= exc.status < 500 and exc.code and str(exc)
    assert len(str(exc)) < 600  # a message names the problem; it never echoes a body


@FAST
@given(shape=shapes, dtype=st.sampled_from(["float32", "<f4", "float64", None, 3]) | json_values,
       b64=st.text(max_size=40) | st.binary(max_size=60).map(
           lambda b: base64.b64encode(b).decode()) | json_values,
       clip_shape=st.sampled_from([CLIP, None]))
def test_native_decoder_refuses_with_a_wire_error_or_returns_valid_clips(shape, dtype, b64,
                                                                         clip_shape):
    payload = {"shape": shape, "dtype": dtype, "b64": b64}
    try:
        X = decode_clips(payload, clip_shape, 8, MAX_BYTES, BOUND)
    except WireError as exc:
        _refused(exc)
    else:
        _accepted(X, clip_shape, 8)


@FAST
@given(payload=json_values)
def test_native_decoder_takes_any_json_as_the_clips_field(payload):
    try:
        X = decode_clips(payload, CLIP, 8, MAX_BYTES, BOUND)
    except WireError as exc:
        _refused(exc)
    else:
        _accepted(X, CLIP, 8)


@FAST
@given(X=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(5), st.just(3)),
                    elements=st.floats(-BOUND, BOUND, width=32)))
def test_native_round_trip_is_bit_exact_for_every_clip_in_range(X):
    np.testing.assert_array_equal(decode_clips(encode_clips(X), CLIP, 8, MAX_BYTES, BOUND), X)
    url = encode_npy_data_url(X[0])
    np.testing.assert_array_equal(decode_npy_data_url(url, CLIP, MAX_BYTES, BOUND)[0], X[0])


@FAST
@given(X=hnp.arrays(np.float32, (2, 5, 3), elements=st.floats(width=32)))
def test_every_non_finite_or_out_of_range_clip_is_a_422_naming_it(X):
    nonfinite = ~np.isfinite(X)
    # NaN and inf are refused first, then values outside the range
    bad = nonfinite if nonfinite.any() else np.abs(X) > BOUND
    try:
        decode_clips(encode_clips(X), CLIP, 8, MAX_BYTES, BOUND)
    except WireError as exc:
        assert bad.any() and exc.status == 422
        assert f"clip index {int(np.nonzero(bad.any(axis=(1, 2)))[0][0])}" in str(exc)
    else:
        assert not bad.any()


def _npy_header(shape, descr, fortran=False, version=(1, 0)) -> bytes:
    buf = io.BytesIO()
    d = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


npy_shapes = st.lists(huge_ints.filter(lambda v: v >= 0), min_size=0, max_size=4).map(tuple)
descrs = st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<i4", "|u1", "|b1", "<c8", "|O", "<U3",
                          "|V8"])


@FAST
@given(shape=npy_shapes, descr=descrs, fortran=st.booleans(),
       version=st.sampled_from([(1, 0), (2, 0)]), data=st.binary(max_size=400),
       clip_shape=st.sampled_from([CLIP, None]))
def test_npy_decoder_reads_the_header_before_any_allocation(shape, descr, fortran, version, data,
                                                            clip_shape):
    """Headers claiming any shape (10**30 rows included) and any dtype, followed by any bytes:
    a WireError or a valid clip, and never a MemoryError."""
    try:
        raw = _npy_header(shape, descr, fortran, version) + data
    except ValueError:  # numpy refuses to write this header at all
        return
    url = NPY_DATA_PREFIX + base64.b64encode(raw).decode()
    try:
        X = decode_npy_data_url(url, clip_shape, MAX_BYTES, BOUND)
    except WireError as exc:
        _refused(exc)
    else:
        _accepted(X, clip_shape, 1)


@FAST
@given(raw=st.binary(max_size=300), prefix=st.sampled_from([NPY_DATA_PREFIX, "data:,", ""]))
def test_npy_decoder_takes_any_bytes(raw, prefix):
    url = prefix + base64.b64encode(b"\x93NUMPY" + raw if raw[:1] == b"\x01" else raw).decode()
    try:
        X = decode_npy_data_url(url, CLIP, MAX_BYTES, BOUND)
    except WireError as exc:
        _refused(exc)
    else:
        _accepted(X, CLIP, 1)


@FAST
@given(X=hnp.arrays(hnp.floating_dtypes() | hnp.integer_dtypes() | hnp.boolean_dtypes()
                    | hnp.complex_number_dtypes(),
                    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
       bound=st.floats(0.5, 1e30))
def test_clip_validator_returns_finite_float32_clips_or_names_the_problem(X, bound):
    try:
        out = check_clip_range(check_clips(X, "clips"), bound, "clips")
    except DataError as exc:
        assert str(exc).startswith("clips: ")
    else:
        assert out.dtype == np.float32 and out.ndim == 3 and out.size > 0
        assert np.isfinite(out).all() and np.abs(out).max() <= bound


@pytest.mark.parametrize("shape", [[0, 9223372036854775808, 6], [0, 10**30, 6],
                                   [0, 2**40, 2**40], [1, 2**40, 2**40]])
def test_issue_shapes_are_refused_without_numpy_errors(shape):
    """The issue's shapes: `Maximum allowed dimension exceeded` and `array is too big` once."""
    for clip_shape in (CLIP, None):
        with pytest.raises(WireError) as err:
            decode_clips({"shape": shape, "b64": ""}, clip_shape, 8, MAX_BYTES, BOUND)
        assert err.value.status in (413, 422)
