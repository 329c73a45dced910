"""openai-vlm: reply parsing on realistic variants, a real HTTP round trip on loopback, and the
resilient runtime the VLM shares with every remote cloud (deadline, retries, circuit breaker,
TLS verification) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import math
import threading
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.cloud.answers import proba_from_chat  # noqa: E402
from edgeswitch.cloud.reasons import CloudFailure, FallbackReason  # noqa: E402
from edgeswitch.config import RuntimeConfig  # noqa: E402
from edgeswitch.errors import EdgeSwitchError, ModelError  # noqa: E402
from edgeswitch.video.source import ClipSpec, VideoClip, iter_clips  # noqa: E402
from edgeswitch.video.synthetic import synthetic_pose_sequence  # noqa: E402
from edgeswitch.video.vlm import OpenAIVLM, VideoChat, VLMConfig  # noqa: E402
from tests.synthetic_video import render_synthetic_video  # noqa: E402

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
    p = proba_from_chat(reply(content), CLASSES)
    assert p.tolist() == [float(c == label) for c in CLASSES]


@pytest.mark.parametrize("content", ["I cannot tell from these images.", "fall or adl",
                                     "", '{"label": "running"}'])
def test_unusable_answers_are_malformed(content):
    with pytest.raises(CloudFailure) as err:
        proba_from_chat(reply(content), CLASSES)
    assert err.value.reason == "malformed"
    with pytest.raises(CloudFailure):
        proba_from_chat({"error": "x"}, CLASSES)


def test_top_logprobs_at_the_label_token_become_probabilities():
    entries = [tok('{"', 1.0), tok("label", 1.0), tok('":"', 1.0),
               tok("fa", 0.7, [tok("fa", 0.7), tok("ad", 0.2), tok("x", 0.1)]), tok("ll", 1.0)]
    p = proba_from_chat(reply('{"label": "fall"}', {"content": entries}), CLASSES)
    np.testing.assert_allclose(p, [0.2 / 0.9, 0.7 / 0.9])
    # only one label among the alternatives: the rest of the mass goes to the other
    entries = [tok("fall", 0.9, [tok("fall", 0.9)])]
    np.testing.assert_allclose(proba_from_chat(reply("fall", {"content": entries}), CLASSES),
                               [0.1, 0.9])
    # a leading "A" (as in "A person falls") must not be read as "adl"
    entries = [tok("A", 0.9, [tok("A", 0.9)]), tok(" person", 1.0)]
    p = proba_from_chat(reply("A person falls: fall", {"content": entries}), CLASSES)
    assert p.tolist() == [0.0, 1.0]


def test_logprobs_are_read_at_the_answer_not_in_reasoning_or_prose():
    # reasoning mentions "fall?" before the answer "adl": the label token is after </think>
    think = [tok("<think>", 1.0), tok("Is it a", 1.0),
             tok("fall", 0.6, [tok("fall", 0.6), tok("ad", 0.4)]), tok("?</think>", 1.0),
             tok("ad", 0.7, [tok("ad", 0.7), tok("fall", 0.3)]), tok("l", 1.0)]
    p = proba_from_chat(reply("<think>Is it a fall?</think>adl", {"content": think}), CLASSES)
    np.testing.assert_allclose(p, [0.7, 0.3])
    # "adult" is not the label "adl": the text's answer wins over a token that disagrees
    prose = [tok("An", 1.0), tok(" ad", 0.9, [tok(" ad", 0.9)]), tok("ult", 1.0),
             tok(" lies: fall", 1.0)]
    p = proba_from_chat(reply("An adult lies on the floor: fall", {"content": prose}), CLASSES)
    assert p.tolist() == [0.0, 1.0]
    # cut off by max_tokens inside the reasoning: no answer at all
    with pytest.raises(CloudFailure, match="cut off inside its reasoning"):
        proba_from_chat({"choices": [{"message": {"content": "<think>The person might fall"},
                                       "finish_reason": "length"}]}, CLASSES)


def _clip(kind: str, tmp_path, seed=0) -> VideoClip:
    kp = synthetic_pose_sequence(kind, steps=32, rng=np.random.default_rng(seed))
    path = tmp_path / f"{kind}.mp4"
    render_synthetic_video(path, kp, size=(320, 240))
    return next(iter_clips(path, ClipSpec(length_s=4, stride_s=4, frames=32, fps_cap=8)))


def test_request_carries_jpeg_frames_a_prompt_and_a_constraint(tmp_path):
    from PIL import Image

    clip = _clip("walk", tmp_path)
    body = VideoChat(VLMConfig("http://x/v1", "m", frames=3, max_side=160)).body(clip)
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "text" and "adl, fall" in parts[0]["text"]
    images = [p["image_url"]["url"] for p in parts[1:]]
    assert len(images) == 3
    img = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) == 160
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] \
        == ["adl", "fall"]
    guided = VideoChat(VLMConfig("http://x/v1", "m", constraint="guided_choice")).body(clip)
    assert guided["guided_choice"] == ["adl", "fall"] and "response_format" not in guided
    custom = VLMConfig("http://x/v1", "m", prompt="{n} frames. Labels: {labels}. Go.")
    assert VideoChat(custom).body(clip)["messages"][0]["content"][0]["text"] == \
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
            vlm = OpenAIVLM(VLMConfig(server.url, style), RuntimeConfig(deadline_ms=10_000))
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
            vlm = OpenAIVLM(VLMConfig(server.url, style),
                            RuntimeConfig(deadline_ms=timeout * 1000))
            with pytest.raises(ModelError, match=error):
                vlm.predict_proba([walk])
            vlm.close()


# ---- the resilient runtime, against a real HTTP server on 127.0.0.1 ------------------------

FAST = RuntimeConfig(deadline_ms=2000, retries=0, backoff_ms=5, backoff_max_ms=20,
                     breaker_failures=5, breaker_reset_s=60)


def _figure_clip(fallen: bool, source: str = "cam") -> VideoClip:
    """A clip of 4 white frames with a dark figure, lying (wider than tall) or standing."""
    frames = np.full((4, 120, 160, 3), 255, np.uint8)
    if fallen:
        frames[:, 80:100, 30:130] = 20
    else:
        frames[:, 20:110, 70:90] = 20
    return VideoClip(source, 0.0, 4.0, frames, np.linspace(0, 4, 4, endpoint=False))


class DoubtfulEdge:
    """A TEST DOUBLE edge model: 'adl' at 0.6 for every clip, a score every router offloads
    at the operating point below (so each clip asks the cloud)."""

    classes_ = CLASSES
    name = "doubtful-edge (test double)"

    def outputs(self, clips):
        from edgeswitch.models.base import ModelOutput

        n = len(clips)
        return ModelOutput(np.tile([0.6, 0.4], (n, 1)), np.zeros((n, 2)))


def _hybrid(cloud, log=None):
    from edgeswitch.runtime import HybridClassifier
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.switcher.routers import make_router

    return HybridClassifier(DoubtfulEdge(), make_router("max_prob"), cloud,
                            OperatingPoint("offload", 1.0, 1.0), log=log)


def test_the_video_cloud_gives_up_at_the_deadline_and_the_edge_answer_stands(tmp_path):
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.video.registry import video_cloud
    from tests.fake_vlm import FakeVLM

    runtime = RuntimeConfig(deadline_ms=300, retries=2, backoff_ms=5, backoff_max_ms=20)
    gate = threading.Event()  # the VLM answers when it opens (or after 60 s)
    with FakeVLM(slow_s=60, gate=gate) as server, \
            DecisionLog(tmp_path / "log.sqlite", CLASSES) as log:
        try:
            cloud = video_cloud("openai-vlm", url=server.url, model="slow", runtime=runtime)
            assert cloud.deadline_s == 0.3
            hybrid = _hybrid(cloud, log)
            res = hybrid.classify([_figure_clip(fallen=True)], ["c0"])
            # back before the VLM answered: the client gave up by itself, it did not wait
            assert server.answered == 0
            assert len(server.seen) == 1  # no retry was started past the deadline
            with pytest.raises(ModelError, match="timeout no answer within 0.3 s"):
                cloud.predict_proba([_figure_clip(fallen=True)])
            assert server.answered == 0
        finally:
            gate.set()
        cloud.close()
        assert bool(res.offloaded[0]) and not bool(res.verified[0])
        assert res.reason[0] is FallbackReason.TIMEOUT and res.answered_by[0] == "edge"
        np.testing.assert_allclose(res.proba[0], [0.6, 0.4])  # the edge's own answer
        assert list(log.frame()["fallback_reason"]) == ["timeout"]


def test_the_video_cloud_retries_a_transient_5xx_and_succeeds():
    from tests.fake_vlm import FakeVLM

    fall, walk = _figure_clip(True), _figure_clip(False)
    with FakeVLM() as server:
        with OpenAIVLM(VLMConfig(server.url, "json"), replace(FAST, retries=2)) as cloud:
            server.fail_next = 2  # two HTTP 503, then answers
            reply = cloud.request([fall])
            assert reply.ok and reply.attempts == 3 and len(server.seen) == 3
            assert reply.proba.tolist() == [[0.0, 1.0]]
            assert cloud.breaker.state == "closed"
            assert cloud.predict_proba([fall, walk]).argmax(axis=1).tolist() == [1, 0]
        with OpenAIVLM(VLMConfig(server.url, "json"), FAST) as no_retry:
            server.fail_next = 1
            reply = no_retry.request([fall])
        assert reply.reason is FallbackReason.OVERLOADED and "HTTP 503 overloaded" in reply.detail


def test_the_video_cloud_breaker_opens_after_n_failures_and_asks_no_more():
    from tests.fake_vlm import FakeVLM

    runtime = replace(FAST, breaker_failures=3)
    with FakeVLM() as server, OpenAIVLM(VLMConfig(server.url, "broken"), runtime) as cloud:
        hybrid = _hybrid(cloud)
        reasons = [hybrid.classify([_figure_clip(True)]).reason[0] for _ in range(5)]
        assert reasons == [FallbackReason.HTTP_500] * 3 + [FallbackReason.CIRCUIT_OPEN] * 2
        assert len(server.seen) == 3  # an open circuit makes no HTTP call
        assert cloud.breaker.state == "open"
        reply = cloud.request([_figure_clip(True)])
        assert reply.reason == "circuit_open" and reply.attempts == 0


def test_the_video_cloud_verifies_tls_against_the_given_ca_and_refuses_others(tmp_path):
    from edgeswitch.video.registry import video_cloud
    from tests.fake_vlm import FakeVLM
    from tests.test_service import _self_signed

    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _ = _self_signed(tmp_path / "other")
    clip = _figure_clip(True)
    with FakeVLM(tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        with video_cloud("openai-vlm", url=server.url, model="json", ca_cert=cert,
                         runtime=FAST) as trusting:
            assert trusting.predict_proba([clip]).tolist() == [[0.0, 1.0]]
        for verify in (True, other_ca):  # the system CAs, or a CA that did not sign it
            with OpenAIVLM(VLMConfig(server.url, "json"), FAST, verify=verify) as refusing:
                reply = refusing.request([clip])
            assert reply.reason is FallbackReason.CONNECTION
            assert "CERTIFICATE" in reply.detail.upper()
        assert len(server.seen) == 1  # a refused handshake sends no request
    with pytest.raises(EdgeSwitchError, match="certificate file not found"):
        video_cloud("openai-vlm", url=server.url, model="json", ca_cert=str(tmp_path / "no"))


def test_the_video_cloud_takes_video_clips_only():
    vlm = OpenAIVLM(VLMConfig("http://127.0.0.1:9/v1", "json"))  # nothing is sent
    reply = vlm.request(np.zeros((1, 8, 3), np.float32))
    assert reply.reason is FallbackReason.ERROR and reply.attempts == 0
    with pytest.raises(ModelError, match="takes a non-empty list of VideoClip"):
        vlm.predict_proba([])
    vlm.close()


def test_watch_and_distill_give_the_vlm_the_runtime_flags_and_ca_cert():
    from edgeswitch.cli.main import build_parser
    from edgeswitch.cli.video import video_cloud_args

    parser = build_parser()
    head = {"watch": ["watch", "cam.mp4", "--switcher", "s.npz", "--op", "op.json"],
            "distill": ["distill", "--data", "videos/", "--edge", "nfd"]}
    deadline_flag = {"watch": "--vlm-deadline-ms", "distill": "--cloud-timeout-ms"}
    for command, argv in head.items():
        vlm = ["--cloud-url", "https://vlm:8000/v1", "--model", "m"]
        deadline = deadline_flag[command]
        kwargs = video_cloud_args(parser.parse_args(
            argv + vlm + [deadline, "250", "--retries", "1", "--breaker-failures", "2",
                          "--ca-cert", "ca.pem"]))
        runtime = kwargs["runtime"]
        assert (runtime.protocol, runtime.deadline_ms, runtime.retries,
                runtime.breaker_failures) == ("openai", 250, 1, 2), command
        assert kwargs["ca_cert"] == "ca.pem"
        default = video_cloud_args(parser.parse_args(argv + vlm))["runtime"]
        assert default.deadline_ms == 60_000  # a VLM is slow: [video] / [distill], not 500 ms
        assert video_cloud_args(parser.parse_args(argv + vlm + [deadline, "120000"])
                                )["runtime"].deadline_ms == 120_000
        with pytest.raises(EdgeSwitchError, match=f"{deadline} applies to --cloud-url only"):
            video_cloud_args(parser.parse_args(argv + ["--cloud", "yolo-fall",
                                                       deadline, "100"]))
    with pytest.raises(EdgeSwitchError, match="OpenAI chat protocol"):
        video_cloud_args(parser.parse_args(head["distill"] + vlm + ["--protocol", "native"]))
