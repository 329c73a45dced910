"""`openai-vlm`: any OpenAI-compatible chat endpoint with image input as the cloud model.

vLLM, Ollama, LM Studio, llama.cpp's server or a hosted API: each clip becomes one chat
request with `frames` JPEG image parts (sampled evenly from the clip) and a prompt that lists
the label set. The answer is constrained where the server supports it (`constraint`):
"json_schema" (an enum over the labels; vLLM, Ollama, OpenAI), "guided_choice" (vLLM), or
"none". Only that is video-specific (`VideoChat`, a chat payload); the client is the shared
one (`cloud.remote.RemoteCloud` over the chat transport), so the VLM gets the per-call
deadline, retries, circuit breaker, TLS verification and reply parsing (`cloud.answers`:
top logprobs at the label token, else the answer's text) of every remote cloud.
"""

from __future__ import annotations

import base64
import io
import json
import ssl
from dataclasses import dataclass, field, replace

import numpy as np

from edgeswitch.cloud.payloads import chat_body
from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.config import CONSTRAINTS, RuntimeConfig, VideoConfig
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.video.inputs import check_video_clips
from edgeswitch.video.source import VideoClip

DEFAULT_PROMPT = (
    "These {n} images are frames from a home camera, in time order, covering {seconds:.1f} "
    "seconds. Decide what the person in them is doing.\n{descriptions}\n"
    "Answer with exactly one label from: {labels}.")
DEFAULT_DESCRIPTIONS = {
    "fall": "fall: a person falls, or is lying on the floor after falling",
    "adl": "adl: any other everyday activity (standing, walking, sitting, bending), or nobody",
}
_VIDEO = VideoConfig()  # the schema's [video] table holds the VLM defaults


@dataclass
class VLMConfig:
    base_url: str                      # e.g. http://127.0.0.1:8000/v1 (vLLM), :11434/v1 (Ollama)
    model: str
    classes: tuple[str, ...] = ("adl", "fall")
    token: str | None = None
    frames: int = _VIDEO.vlm_frames    # images per clip, evenly spaced in time
    max_side: int = _VIDEO.vlm_size    # longer image side in pixels, before JPEG
    jpeg_quality: int = 85
    prompt: str = DEFAULT_PROMPT       # placeholders: {n} {seconds} {labels} {descriptions}
    descriptions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DESCRIPTIONS))
    constraint: str = _VIDEO.constraint
    logprobs: bool = _VIDEO.logprobs
    top_logprobs: int = 10
    max_tokens: int = 32
    concurrency: int = 4               # clips in flight at once

    def __post_init__(self) -> None:
        if self.constraint not in CONSTRAINTS:
            raise EdgeSwitchError(f"constraint must be one of {CONSTRAINTS}, got "
                                  f"{self.constraint!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise EdgeSwitchError(f"VLM base URL must start with http(s)://, got "
                                  f"{self.base_url!r}")
        if self.frames < 1 or self.concurrency < 1:
            raise EdgeSwitchError("frames and concurrency must be >= 1")
        try:
            self.prompt.format(n=1, seconds=1.0, labels="a", descriptions="")
        except (KeyError, IndexError, ValueError) as exc:
            raise EdgeSwitchError(f"prompt template: bad placeholder {exc}; use {{n}}, "
                                  "{seconds}, {labels}, {descriptions}") from None


def jpeg_data_url(frame: np.ndarray, max_side: int, quality: int) -> str:
    from PIL import Image

    img = Image.fromarray(frame)
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class VideoChat:
    """The chat payload for video clips: JPEG frames, the prompt, the answer constraint."""

    kind = "a non-empty list of VideoClip"

    def __init__(self, cfg: VLMConfig) -> None:
        self.cfg = cfg
        self.concurrency = cfg.concurrency

    def clips(self, X) -> list[VideoClip]:
        return check_video_clips(X, f"openai-vlm:{self.cfg.model}")

    def body(self, clip: VideoClip) -> dict:
        """The chat-completions body for one clip (the transport adds the model)."""
        cfg = self.cfg
        pick = np.linspace(0, len(clip.frames) - 1, min(cfg.frames, len(clip.frames)))
        images = [clip.frames[int(round(i))] for i in pick]
        text = cfg.prompt.format(
            n=len(images), seconds=clip.end_s - clip.start_s, labels=", ".join(cfg.classes),
            descriptions="\n".join(cfg.descriptions.get(c, c) for c in cfg.classes))
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(f, cfg.max_side,
                                                                      cfg.jpeg_quality)}}
            for f in images]
        body = chat_body(content, cfg.max_tokens, cfg.top_logprobs if cfg.logprobs else 0,
                         **self._constraint())
        # what leaves the device for this clip (the JSON body; the model name and HTTP
        # headers come on top), for the metrics: `watch` reads it back from the clip
        clip.meta["sent_bytes"] = len(json.dumps(body))
        return body

    def _constraint(self) -> dict:
        labels = list(self.cfg.classes)
        if self.cfg.constraint == "json_schema":
            return {"response_format": {"type": "json_schema", "json_schema": {
                "name": "label", "strict": True, "schema": {
                    "type": "object", "properties": {"label": {"type": "string",
                                                               "enum": labels}},
                    "required": ["label"], "additionalProperties": False}}}}
        if self.cfg.constraint == "guided_choice":
            return {"guided_choice": labels,                  # vLLM before 0.12
                    "structured_outputs": {"choice": labels}}  # vLLM from about 0.10.2
        return {}


# a VLM is slow: a generous deadline per round of `concurrency` clips (the config's [video]
# vlm_deadline_ms), the usual retries and breaker
VLM_RUNTIME = RuntimeConfig(protocol="openai", deadline_ms=_VIDEO.vlm_deadline_ms)


class OpenAIVLM(RemoteCloud):
    """Cloud: a vision-language model behind an OpenAI-compatible chat endpoint. It is the
    shared remote client with the video payload: `predict_proba(clips)` raises ModelError
    saying why, `request(clips, deadline)` returns the reason instead; `verify` is True (the
    system CAs), a CA or self-signed certificate file, or an `ssl.SSLContext`."""

    def __init__(self, cfg: VLMConfig, runtime: RuntimeConfig | None = None,
                 verify: bool | str | ssl.SSLContext = True) -> None:
        super().__init__(cfg.base_url, tuple(cfg.classes), runtime or replace(VLM_RUNTIME),
                         token=cfg.token, model=cfg.model, verify=verify,
                         name=f"openai-vlm:{cfg.model}", payload=VideoChat(cfg))
        self.vlm = cfg
