"""`openai-vlm`: any OpenAI-compatible chat endpoint with image input as the cloud model.

vLLM, Ollama, LM Studio, llama.cpp's server or a hosted API: each clip becomes one chat
request with `frames` JPEG image parts (sampled evenly from the clip) and a prompt that lists
the label set. The answer is constrained where the server supports it (`constraint`):
"json_schema" (an enum over the labels; vLLM, Ollama, OpenAI), "guided_choice" (vLLM), or
"none". Class probabilities come from the top logprobs at the answer's label token when the
server returns them, else from the answer itself (robust to JSON, code fences, reasoning
blocks and free text). A clip the server does not answer sensibly raises `ModelError`.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgeswitch.cloud.transports import CloudFailure, label_from_text, match_class
from edgeswitch.errors import EdgeSwitchError, ModelError
from edgeswitch.video.source import VideoClip

DEFAULT_PROMPT = (
    "These {n} images are frames from a home camera, in time order, covering {seconds:.1f} "
    "seconds. Decide what the person in them is doing.\n{descriptions}\n"
    "Answer with exactly one label from: {labels}.")
DEFAULT_DESCRIPTIONS = {
    "fall": "fall: a person falls, or is lying on the floor after falling",
    "adl": "adl: any other everyday activity (standing, walking, sitting, bending), or nobody",
}
CONSTRAINTS = ("json_schema", "guided_choice", "none")


@dataclass
class VLMConfig:
    base_url: str                      # e.g. http://127.0.0.1:8000/v1 (vLLM), :11434/v1 (Ollama)
    model: str
    classes: tuple[str, ...] = ("adl", "fall")
    token: str | None = None
    frames: int = 4                    # images per clip, evenly spaced in time
    max_side: int = 448                # longer image side in pixels, before JPEG
    jpeg_quality: int = 85
    prompt: str = DEFAULT_PROMPT       # placeholders: {n} {seconds} {labels} {descriptions}
    descriptions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DESCRIPTIONS))
    constraint: str = "json_schema"
    logprobs: bool = True
    top_logprobs: int = 10
    max_tokens: int = 32
    timeout_s: float = 60.0            # per request
    concurrency: int = 4               # clips in flight at once

    def __post_init__(self) -> None:
        if self.constraint not in CONSTRAINTS:
            raise EdgeSwitchError(f"constraint must be one of {CONSTRAINTS}, got "
                                  f"{self.constraint!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise EdgeSwitchError(f"VLM base URL must start with http(s)://, got "
                                  f"{self.base_url!r}")
        if self.frames < 1 or self.concurrency < 1 or self.timeout_s <= 0:
            raise EdgeSwitchError("frames and concurrency must be >= 1, timeout > 0")
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


def build_request(cfg: VLMConfig, clip: VideoClip) -> dict:
    """The chat-completions body for one clip."""
    pick = np.linspace(0, len(clip.frames) - 1, min(cfg.frames, len(clip.frames)))
    images = [clip.frames[int(round(i))] for i in pick]
    text = cfg.prompt.format(
        n=len(images), seconds=clip.end_s - clip.start_s, labels=", ".join(cfg.classes),
        descriptions="\n".join(cfg.descriptions.get(c, c) for c in cfg.classes))
    content = [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": jpeg_data_url(f, cfg.max_side,
                                                                  cfg.jpeg_quality)}}
        for f in images]
    body = {"model": cfg.model, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": cfg.max_tokens}
    if cfg.logprobs:
        body |= {"logprobs": True, "top_logprobs": cfg.top_logprobs}
    if cfg.constraint == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "label", "strict": True, "schema": {
                "type": "object", "properties": {"label": {"type": "string",
                                                           "enum": list(cfg.classes)}},
                "required": ["label"], "additionalProperties": False}}}
    elif cfg.constraint == "guided_choice":
        body["guided_choice"] = list(cfg.classes)                  # vLLM before 0.12
        body["structured_outputs"] = {"choice": list(cfg.classes)}  # vLLM from about 0.10.2
    return body


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def clean_answer(content: str) -> str:
    """The answer without reasoning blocks or a Markdown code fence around it."""
    text = _THINK.sub("", content or "").strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def _label_entries(entries: list, content: str) -> list:
    """The logprob entries that can hold the answer's label: after a reasoning block, and in a
    JSON answer after the "label" key (so "adult" in a sentence or "fall?" in reasoning is
    never read as the label)."""
    tokens = [str(e.get("token", "")) for e in entries]
    start = 0
    if "</think>" in content:
        text = ""
        for i, tok in enumerate(tokens):
            text += tok
            if "</think>" in text:
                start = i + 1
                break
    if clean_answer(content).lstrip().startswith("{"):
        text = ""
        for i in range(start, len(tokens)):
            text += tokens[i]
            if re.search(r'"(label|class|answer)"\s*:', text):
                return entries[i + 1:]
        return []
    return entries[start:]


def proba_from_reply(reply: dict, classes: tuple[str, ...]) -> np.ndarray:
    """Class probabilities from a chat-completions reply (see the module docstring)."""
    try:
        choice = reply["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise CloudFailure("malformed", f"not a chat completion: {str(reply)[:120]}",
                           retryable=False) from None
    if "<think>" in content.lower() and "</think>" not in content.lower():
        raise CloudFailure("malformed", "the answer was cut off inside its reasoning "
                           f"(finish_reason {choice.get('finish_reason')}); raise max_tokens",
                           retryable=False)
    label = label_from_text(clean_answer(content), classes)  # the answer the text gives
    entries = ((choice.get("logprobs") or {}).get("content")) or []
    for entry in _label_entries(entries, content):  # the first token that starts a label
        if match_class(str(entry.get("token", "")), classes) is None:
            continue
        p = np.zeros(len(classes))
        for alt in entry.get("top_logprobs") or [entry]:
            i, lp = match_class(str(alt.get("token", "")), classes), alt.get("logprob")
            if i is not None and isinstance(lp, int | float) and np.isfinite(lp):
                p[i] += np.exp(lp)
        if p.sum() > 0:
            missing = p == 0  # mass the top list leaves is spread over the labels it misses
            if missing.any():
                p[missing] = max(0.0, 1.0 - p.sum()) / missing.sum()
            p /= p.sum()
            if int(p.argmax()) == label:  # else the token read is not the answer: trust text
                return p
        break
    p = np.zeros(len(classes))
    p[label] = 1.0
    return p


class OpenAIVLM:
    """Cloud: a vision-language model behind an OpenAI-compatible chat endpoint."""

    def __init__(self, cfg: VLMConfig) -> None:
        import httpx

        self.cfg = cfg
        self.classes_ = tuple(cfg.classes)
        self.name = f"openai-vlm:{cfg.model}"
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        self._http = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers,
                                  timeout=cfg.timeout_s)

    def _one(self, clip: VideoClip) -> np.ndarray:
        import httpx

        try:
            r = self._http.post("/chat/completions", json=build_request(self.cfg, clip))
        except httpx.TimeoutException:
            raise ModelError(f"{self.name}: no answer within {self.cfg.timeout_s} s for "
                             f"{clip.clip_id}") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"{self.name}: cannot reach {self.cfg.base_url}: {exc}") from None
        if r.status_code != 200:
            raise ModelError(f"{self.name}: HTTP {r.status_code} for {clip.clip_id}: "
                             f"{r.text[:200]}")
        try:
            proba = proba_from_reply(r.json(), self.classes_)
        except (CloudFailure, json.JSONDecodeError) as exc:
            raise ModelError(f"{self.name}: unusable answer for {clip.clip_id}: {exc}") \
                from None
        return proba

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        clips = list(clips)
        if not clips or not all(isinstance(c, VideoClip) for c in clips):
            raise ModelError(f"{self.name} takes a non-empty list of VideoClip")
        with ThreadPoolExecutor(min(self.cfg.concurrency, len(clips))) as pool:
            return np.stack(list(pool.map(self._one, clips)))

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(clips).argmax(axis=1)]

    def close(self) -> None:
        self._http.close()
