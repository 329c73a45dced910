"""The wire format: clips survive the round trip, and every malformed input names its problem."""

import base64

import numpy as np
import pytest

from edgeswitch.cloud.wire import (
    WireError,
    decode_clips,
    decode_npy_data_url,
    encode_clips,
    encode_npy_data_url,
)

RNG = np.random.default_rng(0)


def test_native_round_trip_is_bit_exact():
    X = RNG.normal(size=(3, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(decode_clips(encode_clips(X), (5, 2), 10), X)


def test_npy_data_url_round_trip():
    x = RNG.normal(size=(5, 2)).astype(np.float32)
    np.testing.assert_array_equal(decode_npy_data_url(encode_npy_data_url(x), (5, 2))[0], x)


@pytest.mark.parametrize("payload, code, status", [
    ({"shape": [1, 5, 2], "b64": "not base64!"}, "bad_base64", 400),
    ({"shape": [1, 5, 2], "dtype": "float64", "b64": ""}, "bad_dtype", 422),
    ({"shape": [1, 5], "b64": ""}, "bad_shape", 422),
    ({"shape": [1, 5, 2], "b64": base64.b64encode(b"\0" * 12).decode()}, "bad_shape", 422),
    ({"shape": [2000, 5, 2], "b64": ""}, "too_many_clips", 413),
    ("a string", "bad_clips", 422),
])
def test_native_decoding_errors(payload, code, status):
    with pytest.raises(WireError) as err:
        decode_clips(payload, (5, 2), 1024)
    assert (err.value.code, err.value.status) == (code, status)


def test_wrong_clip_shape_for_the_model_is_named():
    with pytest.raises(WireError, match=r"\[n, 5, 2\].*got \[1, 4, 2\]"):
        decode_clips(encode_clips(np.zeros((1, 4, 2))), (5, 2), 10)


def test_nan_is_refused_with_the_clip_index():
    X = np.zeros((3, 5, 2), np.float32)
    X[2, 1, 1] = np.nan
    with pytest.raises(WireError, match="NaN.*clip index 2") as err:
        decode_clips(encode_clips(X), (5, 2), 10)
    assert err.value.code == "non_finite"


def test_corrupt_npy_and_wrong_prefix():
    with pytest.raises(WireError) as err:
        decode_npy_data_url("data:application/x-npy;base64,"
                            + base64.b64encode(b"garbage").decode(), (5, 2))
    assert err.value.code == "bad_npy"
    with pytest.raises(WireError, match="data URL"):
        decode_npy_data_url("data:image/png;base64,AAAA", (5, 2))


def test_chat_clip_must_be_a_single_clip():
    with pytest.raises(WireError, match="one clip"):
        decode_npy_data_url(encode_npy_data_url(np.zeros((2, 5, 2))), (5, 2))


def test_token_file_first_line_and_bad_tokens(tmp_path, monkeypatch):
    from edgeswitch.cloud.tokens import resolve_token
    from edgeswitch.errors import EdgeSwitchError

    f = tmp_path / "token"
    f.write_text("abc123\n# a comment\n")
    assert resolve_token(f) == "abc123"
    f.write_text("two words\n")
    with pytest.raises(EdgeSwitchError, match="without spaces"):
        resolve_token(f)
    monkeypatch.delenv("EDGESWITCH_TOKEN", raising=False)
    assert resolve_token() is None
    monkeypatch.setenv("EDGESWITCH_TOKEN", "from-env")
    assert resolve_token() == "from-env"


@pytest.mark.parametrize("text", ["nope", "sleep", "sleep:1.2.3", "http500@.", "http500@2"])
def test_bad_fault_specs_are_clear_errors(text):
    from edgeswitch.errors import EdgeSwitchError
    from edgeswitch.serving.app import Fault

    with pytest.raises(EdgeSwitchError, match="bad fault"):
        Fault.parse(text)
    assert Fault.parse("sleep:2.5@0.5") == Fault("sleep", 0.5, 2.5)
