"""Reading cloud replies: probabilities from top logprobs, labels from free text, and replies
that must be refused. The sensor form of a chat reply (our server's: the label as the first
token, its top logprobs over the classes); tests/test_vlm.py reads the video form with the
same function."""

import math

import numpy as np
import pytest

from edgeswitch.cloud.answers import check_reply, label_from_text, proba_from_chat
from edgeswitch.cloud.reasons import CloudFailure, FallbackReason, status_failure

CLASSES = ("fall", "walk", "sit_down")


def chat(content: str, top: list[tuple[str, float]]) -> dict:
    """A chat completion whose first token carries `top` as its top logprobs."""
    logprobs = None
    if top:
        first = {"token": top[0][0], "logprob": top[0][1],
                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}
        logprobs = {"content": [first]}
    return {"choices": [{"message": {"content": content}, "logprobs": logprobs}]}


def test_top_logprobs_become_probabilities():
    top = [("walk", math.log(0.7)), ("fall", math.log(0.2)), ("sit_down", math.log(0.1))]
    np.testing.assert_allclose(proba_from_chat(chat("walk", top), CLASSES), [0.2, 0.7, 0.1])


def test_missing_classes_share_the_mass_left():
    top = [("Walk", math.log(0.6)), (" fall", math.log(0.3))]
    np.testing.assert_allclose(proba_from_chat(chat("walk", top), CLASSES), [0.3, 0.6, 0.1])


def test_first_token_prefix_of_a_single_class_counts():
    # a real tokenizer may give "sit" as the first token of "sit_down"
    p = proba_from_chat(chat("sit_down", [("sit", math.log(0.9)), ("w", math.log(0.05))]),
                        CLASSES)
    np.testing.assert_allclose(p, [0.05, 0.05, 0.9])


@pytest.mark.parametrize("text, expected", [
    ("fall", 0), ("FALL.", 0), ('{"label": "walk"}', 1), ('"sit_down"', 2),
    ("The person appears to fall.", 0), ("Answer: sit_down", 2),
])
def test_labels_from_free_text(text, expected):
    assert label_from_text(text, CLASSES) == expected
    assert proba_from_chat(chat(text, []), CLASSES).argmax() == expected


@pytest.mark.parametrize("text", ["", "running", "either fall or walk"])
def test_unreadable_answers_are_malformed(text):
    with pytest.raises(CloudFailure) as err:
        label_from_text(text, CLASSES)
    assert err.value.reason == "malformed"


def test_check_reply_refuses_wrong_class_sets():
    with pytest.raises(CloudFailure) as err:
        check_reply([[0.5, 0.5]], 1, CLASSES)
    assert err.value.reason == "wrong_classes" and not err.value.retryable
    with pytest.raises(CloudFailure) as err:
        check_reply([[1, 0, 0]], 1, CLASSES, reply_classes=["a", "b", "c"])
    assert err.value.reason == "wrong_classes"
    with pytest.raises(CloudFailure, match="not finite"):
        check_reply([[np.nan, 0, 1]], 1, CLASSES)
    with pytest.raises(CloudFailure, match="for 2 clips"):
        check_reply([[1, 0, 0]], 2, CLASSES)


def test_http_status_reasons_and_retry_policy():
    assert status_failure(500).reason == "http_500" and status_failure(500).retryable
    assert status_failure(429).retryable
    assert status_failure(401).reason == "unauthorized" and not status_failure(401).retryable
    assert status_failure(422).reason == "rejected" and not status_failure(422).retryable
    assert status_failure(503).reason is FallbackReason.OVERLOADED
    assert status_failure(429).reason is FallbackReason.OVERLOADED
    assert status_failure(507).reason == "http_507" and "HTTP 507" in status_failure(507).detail


def test_fallback_reasons_keep_the_strings_of_json_output_and_logs():
    import json

    assert [r.value for r in FallbackReason] == [
        "timeout", "connection", "overloaded", "http_429", "http_500", "http_502", "http_503",
        "http_504", "unauthorized", "rejected", "malformed", "wrong_classes", "circuit_open",
        "no_cloud", "queue_full", "drain_deadline", "no_person", "error"]
    other = FallbackReason.http(507)  # any 5xx has its own value, as before the enum
    assert other == "http_507" and FallbackReason("http_507") is other
    assert json.dumps({"fallback_reason": FallbackReason.CIRCUIT_OPEN}) == \
        '{"fallback_reason": "circuit_open"}'
    with pytest.raises(ValueError):
        FallbackReason("http_404")  # a 4xx is "rejected" or "unauthorized", never http_4xx
    assert CloudFailure("timeout").reason is FallbackReason.TIMEOUT


def test_no_reason_is_a_bare_string_in_the_code():
    """Every CloudFailure, CloudReply and Decision names its reason through the enum."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "edgeswitch"
    bare = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = {"CloudFailure": node.args[:1], "CloudReply": node.args[1:2]}.get(name, [])
            args += [k.value for k in node.keywords if k.arg in ("reason", "fallback_reason")]
            bare += [f"{path.relative_to(root)}:{node.lineno}" for a in args
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    assert not bare, f"bare reason strings: {bare}"


def test_the_chat_api_base_keeps_a_versioned_path_and_completes_a_server_root():
    from edgeswitch.cloud.transports import api_base

    assert api_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"  # serve-cloud
    assert api_base("https://gw.example/edgeswitch/") == "https://gw.example/edgeswitch/v1"
    assert api_base("http://127.0.0.1:11434/v1") == "http://127.0.0.1:11434/v1"  # Ollama
    assert api_base("https://api.example/v1beta/openai") == "https://api.example/v1beta/openai"
