"""openai-vlm: reply parsing on realistic variants, and a real HTTP round trip on loopback."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.cloud.transports import CloudFailure  # noqa: E402
from edgeswitch.errors import EdgeSwitchError, ModelError  # noqa: E402
from edgeswitch.video.source import ClipSpec, VideoClip, iter_clips  # noqa: E402
from edgeswitch.video.synthetic import (  # noqa: E402
    render_synthetic_video,
    synthetic_pose_sequence,
)
from edgeswitch.video.vlm import OpenAIVLM, VLMConfig, build_request, proba_from_reply  # noqa: E402

CLASSES = ("adl", "fall")


def reply(content, logprobs=None):
    return {"choices": [{"message": {"content": content}, "logprobs": logprobs}]}


def tok(t, p, top=None):
    return {"token": t, "logprob": math.log(p), "top_logprobs": top or []}


@pytest.mark.parametrize("content,label", [
    ('{"label": "fall"}', "fall"), ("fall", "fall"), ("ADL", "adl"), ('"adl".', "adl"),
    ("The person has fallen; I would say: fall", "fall"),
    ("```json\n{\"label\": \"adl\"}\n```", "adl"),
    ("<think>Is it a fall? The person is upright.</think>\nadl", "adl"),
    ('{"class": "fall"}', "fall"), ("Answer: Fall", "fall"),
])
def test_answers_without_logprobs(content, label):
    p = proba_from_reply(reply(content), CLASSES)
    assert p.tolist() == [float(c == label) for c in CLASSES]


@pytest.mark.parametrize("content", ["I cannot tell from these images.", "fall or adl",
                                     "", '{"label": "running"}'])
def test_unusable_answers_are_malformed(content):
    with pytest.raises(CloudFailure) as err:
        proba_from_reply(reply(content), CLASSES)
    assert err.value.reason == "malformed"
    with pytest.raises(CloudFailure):
        proba_from_reply({"error": "x"}, CLASSES)


def test_top_logprobs_at_the_label_token_become_probabilities():
    entries = [tok('{"', 1.0), tok("label", 1.0), tok('":"', 1.0),
               tok("fa", 0.7, [tok("fa", 0.7), tok("ad", 0.2), tok("x", 0.1)]), tok("ll", 1.0)]
    p = proba_from_reply(reply('{"label": "fall"}', {"content": entries}), CLASSES)
    np.testing.assert_allclose(p, [0.2 / 0.9, 0.7 / 0.9])
    # only one label among the alternatives: the rest of the mass goes to the other
    entries = [tok("fall", 0.9, [tok("fall", 0.9)])]
    np.testing.assert_allclose(proba_from_reply(reply("fall", {"content": entries}), CLASSES),
                               [0.1, 0.9])
    # a leading "A" (as in "A person falls") must not be read as "adl"
    entries = [tok("A", 0.9, [tok("A", 0.9)]), tok(" person", 1.0)]
    p = proba_from_reply(reply("A person falls: fall", {"content": entries}), CLASSES)
    assert p.tolist() == [0.0, 1.0]


def test_logprobs_are_read_at_the_answer_not_in_reasoning_or_prose():
    # reasoning mentions "fall?" before the answer "adl": the label token is after </think>
    think = [tok("<think>", 1.0), tok("Is it a", 1.0),
             tok("fall", 0.6, [tok("fall", 0.6), tok("ad", 0.4)]), tok("?</think>", 1.0),
             tok("ad", 0.7, [tok("ad", 0.7), tok("fall", 0.3)]), tok("l", 1.0)]
    p = proba_from_reply(reply("<think>Is it a fall?</think>adl", {"content": think}), CLASSES)
    np.testing.assert_allclose(p, [0.7, 0.3])
    # "adult" is not the label "adl": the text's answer wins over a token that disagrees
    prose = [tok("An", 1.0), tok(" ad", 0.9, [tok(" ad", 0.9)]), tok("ult", 1.0),
             tok(" lies: fall", 1.0)]
    p = proba_from_reply(reply("An adult lies on the floor: fall", {"content": prose}), CLASSES)
    assert p.tolist() == [0.0, 1.0]
    # cut off by max_tokens inside the reasoning: no answer at all
    with pytest.raises(CloudFailure, match="cut off inside its reasoning"):
        proba_from_reply({"choices": [{"message": {"content": "<think>The person might fall"},
                                       "finish_reason": "length"}]}, CLASSES)


def _clip(kind: str, tmp_path, seed=0) -> VideoClip:
    kp = synthetic_pose_sequence(kind, steps=32, rng=np.random.default_rng(seed))
    path = tmp_path / f"{kind}.mp4"
    render_synthetic_video(path, kp, size=(320, 240))
    return next(iter_clips(path, ClipSpec(length_s=4, stride_s=4, frames=32, fps_cap=8)))


def test_request_carries_jpeg_frames_a_prompt_and_a_constraint(tmp_path):
    from PIL import Image

    clip = _clip("walk", tmp_path)
    body = build_request(VLMConfig("http://x/v1", "m", frames=3, max_side=160), clip)
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "text" and "adl, fall" in parts[0]["text"]
    images = [p["image_url"]["url"] for p in parts[1:]]
    assert len(images) == 3
    img = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) == 160
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] \
        == ["adl", "fall"]
    guided = build_request(VLMConfig("http://x/v1", "m", constraint="guided_choice"), clip)
    assert guided["guided_choice"] == ["adl", "fall"] and "response_format" not in guided
    custom = VLMConfig("http://x/v1", "m", prompt="{n} frames. Labels: {labels}. Go.")
    assert build_request(custom, clip)["messages"][0]["content"][0]["text"] == \
        "4 frames. Labels: adl, fall. Go."
    with pytest.raises(EdgeSwitchError, match="placeholder"):
        VLMConfig("http://x/v1", "m", prompt="{frames} frames")
    with pytest.raises(EdgeSwitchError, match="constraint"):
        VLMConfig("http://x/v1", "m", constraint="regex")


@pytest.mark.slow
def test_round_trip_to_an_openai_compatible_server_on_loopback(tmp_path):
    from tests.fake_vlm import FakeVLM

    fall, walk = _clip("fall_sideways", tmp_path, 1), _clip("walk", tmp_path, 2)
    with FakeVLM() as server:
        for style in ("json-logprobs", "json", "text", "fenced", "think"):
            vlm = OpenAIVLM(VLMConfig(server.url, style, timeout_s=10))
            p = vlm.predict_proba([fall, walk])
            vlm.close()
            assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1)
            assert vlm.classes_ == CLASSES
            assert p[0].argmax() == 1 and p[1].argmax() == 0, (style, p)
            if style == "json-logprobs":
                np.testing.assert_allclose(p[0], [0.15 / 0.95, 0.8 / 0.95])
        assert server.seen[-1]["temperature"] == 0
        for style, timeout, error in (("slow", 0.5, "no answer within 0.5 s"),
                                      ("broken", 10, "HTTP 500"), ("gpt-9", 10, "HTTP 404")):
            vlm = OpenAIVLM(VLMConfig(server.url, style, timeout_s=timeout))
            with pytest.raises(ModelError, match=error):
                vlm.predict_proba([walk])
            vlm.close()
