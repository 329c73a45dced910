"""Property tests (hypothesis) of the chat-content parsers: the edge's reading of a chat reply
(cloud.answers) returns valid probabilities or a CloudFailure, whatever the server or VLM says;
the server's reading of a chat request returns one clip or refuses with a 4xx."""

from __future__ import annotations

import math

import numpy as np
import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeswitch.cloud.answers import check_reply, clean_answer, label_from_text, proba_from_chat
from edgeswitch.cloud.reasons import CloudFailure
from edgeswitch.cloud.wire import WireError, decode_npy_data_url, encode_npy_data_url

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = ("walking", "running", "standing", "badminton")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
words = st.sampled_from([*CLASSES, "Walking", "run", "w", "<think>", "</think>", "```json",
                         "```", '{"label": ', '"', "}", " ", ".", "fall?", "label", "class"])
answers = st.lists(words, max_size=8).map("".join) | st.text(max_size=40)
logprob = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1000, 5) | json_values


def alt(token=None):
    token = words | st.text(max_size=6) if token is None else token
    return st.fixed_dictionaries({"token": token, "logprob": logprob},
                                 optional={"bytes": json_values})


entries = st.lists(st.fixed_dictionaries(
    {"token": words}, optional={"logprob": logprob, "top_logprobs": st.lists(alt(), max_size=5)
                                | json_values}) | json_values, max_size=6)
replies = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
    {"message": st.fixed_dictionaries({"content": answers | json_values})},
    optional={"logprobs": st.fixed_dictionaries({"content": entries}) | json_values,
              "finish_reason": json_values}), max_size=2)}) | json_values


def _valid(p) -> None:
    p = np.asarray(p)
    assert p.shape == (len(CLASSES),) and np.isfinite(p).all() and (p >= 0).all()
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)


@FAST
@given(reply=replies)
def test_a_chat_reply_gives_probabilities_or_a_cloud_failure(reply):
    try:
        p = proba_from_chat(reply, CLASSES)
    except CloudFailure as exc:
        assert exc.reason and str(exc)
    else:
        _valid(p)
        check_reply(p[None], 1, CLASSES)  # what the client applies next passes


focused = st.fixed_dictionaries({"choices": st.tuples(st.fixed_dictionaries({
    "message": st.fixed_dictionaries({"content": st.sampled_from(CLASSES)}),
    "logprobs": st.fixed_dictionaries({"content": st.lists(st.fixed_dictionaries(
        {"token": st.sampled_from(CLASSES)},
        optional={"logprob": logprob, "top_logprobs": st.lists(
            alt(st.sampled_from(CLASSES)), max_size=5) | json_values}), min_size=1,
        max_size=3)})}))})


@FAST
@given(reply=focused)
def test_logprobs_of_any_kind_at_a_label_token_give_probabilities(reply):
    """Regression: `top_logprobs` that is not a list (5, 1.5, true) raised TypeError, and a
    logprob of 1e308 or 10**400 OverflowError."""
    _valid(proba_from_chat(reply, CLASSES))


def test_top_logprobs_that_is_not_a_list_reads_as_the_token_alone():
    for garbage in (5, 1.5, True, "ab", {"a": 1}):
        reply = {"choices": [{"message": {"content": "running"}, "logprobs": {"content": [
            {"token": "running", "logprob": 0.0, "top_logprobs": garbage}]}}]}
        np.testing.assert_array_equal(proba_from_chat(reply, CLASSES), [0, 1, 0, 0])
    for huge in (1e308, 10**400, 710.0):
        reply = {"choices": [{"message": {"content": "running"}, "logprobs": {"content": [
            {"token": "running", "logprob": huge}]}}]}
        _valid(proba_from_chat(reply, CLASSES))


@FAST
@given(text=answers)
def test_a_free_text_answer_names_one_class_or_is_malformed(text):
    try:
        i = label_from_text(clean_answer(text), CLASSES)
    except CloudFailure as exc:
        assert exc.reason == "malformed"
    else:
        assert 0 <= i < len(CLASSES)


@FAST
@given(proba=json_values | st.lists(st.lists(st.floats() | st.integers(), max_size=5),
                                    max_size=3), n=st.integers(0, 3))
def test_check_reply_accepts_only_n_valid_rows(proba, n):
    try:
        p = check_reply(proba, n, CLASSES)
    except CloudFailure as exc:
        assert exc.reason in ("malformed", "wrong_classes")
    else:
        assert p.shape == (n, len(CLASSES)) and np.isfinite(p).all() and (p >= 0).all()


part = st.fixed_dictionaries({"type": st.sampled_from(["text", "file", "image_url"]) | json_values},
                             optional={"text": json_values, "file": st.fixed_dictionaries(
                                 {}, optional={"file_data": st.sampled_from(
                                     [encode_npy_data_url(np.zeros((5, 3), np.float32)),
                                      encode_npy_data_url(np.zeros((4, 3), np.float32)),
                                      "data:application/x-npy;base64,AAAA", "x"])
                                     | json_values}) | json_values})
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | json_values},
    optional={"content": st.lists(part, max_size=3) | st.text(max_size=10) | json_values}),
    max_size=3)


@FAST
@given(messages=messages, extra=st.dictionaries(st.sampled_from(
    ["logprobs", "top_logprobs", "temperature", "model"]), json_values, max_size=3))
def test_the_server_reads_one_clip_from_a_chat_request_or_refuses(messages, extra):
    """The server's chat decoding (the request schema, then the clip part, then the .npy):
    a schema error (422), a WireError with a 4xx, or exactly one clip [1, 5, 3]."""
    from edgeswitch.serving.routes.openai import ChatRequest, clip_part

    body = {"model": "m", "messages": messages} | extra
    try:
        req = ChatRequest.model_validate(body)
    except pydantic.ValidationError:
        return  # the app answers 422 in our shape (tests/test_fuzz_api.py)
    try:
        X = decode_npy_data_url(clip_part(req), (5, 3), 1 << 16, 1e6)
    except WireError as exc:
        assert 400 <= exc.status < 500 and len(str(exc)) < 600
    else:
        assert X.shape == (1, 5, 3) and X.dtype == np.float32
