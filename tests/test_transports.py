"""Reading cloud replies: probabilities from top logprobs, labels from free text, and replies
that must be refused."""

import math

import numpy as np
import pytest

from edgeswitch.cloud.transports import (
    CloudFailure,
    check_reply,
    label_from_text,
    proba_from_chat,
    status_failure,
)

CLASSES = ("fall", "walk", "sit_down")


def test_top_logprobs_become_probabilities():
    top = [("walk", math.log(0.7)), ("fall", math.log(0.2)), ("sit_down", math.log(0.1))]
    np.testing.assert_allclose(proba_from_chat("walk", top, CLASSES), [0.2, 0.7, 0.1])


def test_missing_classes_share_the_mass_left():
    top = [("Walk", math.log(0.6)), (" fall", math.log(0.3))]
    np.testing.assert_allclose(proba_from_chat("walk", top, CLASSES), [0.3, 0.6, 0.1])


def test_first_token_prefix_of_a_single_class_counts():
    # a real tokenizer may give "sit" as the first token of "sit_down"
    p = proba_from_chat("sit_down", [("sit", math.log(0.9)), ("w", math.log(0.05))], CLASSES)
    np.testing.assert_allclose(p, [0.05, 0.05, 0.9])


@pytest.mark.parametrize("text, expected", [
    ("fall", 0), ("FALL.", 0), ('{"label": "walk"}', 1), ('"sit_down"', 2),
    ("The person appears to fall.", 0), ("Answer: sit_down", 2),
])
def test_labels_from_free_text(text, expected):
    assert label_from_text(text, CLASSES) == expected
    assert proba_from_chat(text, [], CLASSES).argmax() == expected


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
