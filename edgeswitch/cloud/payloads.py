"""What an OpenAI chat request says about one clip: the pluggable part of the chat client.

A payload turns a call's clips into one chat-completions body per clip (messages, answer
constraint, logprobs on or off); the HTTP call, auth, TLS, deadline, retries, circuit breaker
and reply parsing are the chat transport's, the same for every payload. `SensorChat` sends a
sensor clip `[T, C]` as a `.npy` file part (our server reads it); `video.vlm.VideoChat` sends
a video clip's frames as JPEG images with a prompt.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeswitch.errors import ModelError


class ChatPayload(Protocol):
    kind: str                # what it sends, for error messages ("sensor clips", ...)
    concurrency: int | None  # requests in flight at once (None: every clip of a call)

    def clips(self, X) -> list:
        """A call's clips, one request each; ModelError when X is not this payload's kind."""
        ...

    def body(self, clip) -> dict:
        """The chat-completions body for one clip, without "model" (the transport's)."""
        ...


def chat_body(content: list[dict], max_tokens: int, top_logprobs: int = 0, **extra) -> dict:
    """One user message, a deterministic answer (temperature 0), logprobs when asked for."""
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": max_tokens}
    if top_logprobs:
        body |= {"logprobs": True, "top_logprobs": top_logprobs}
    return body | extra


class SensorChat:
    """A sensor clip `[T, C]` as a standard `file` content part holding a `.npy` file, with a
    prompt listing the labels for servers that read it."""

    kind = "sensor clips [n, T, C]"
    concurrency = None

    def __init__(self, classes: tuple[str, ...], prompt: str | None = None) -> None:
        self.classes = tuple(classes)
        self.prompt = prompt or ("Classify this sensor clip. Answer with exactly one label "
                                 "from: " + ", ".join(self.classes) + ".")

    def clips(self, X) -> list:
        try:
            X = np.ascontiguousarray(X, np.float32)
        except (TypeError, ValueError):
            raise ModelError(f"the chat client sends {self.kind}, got "
                             f"{type(X).__name__}") from None
        if X.ndim != 3:
            raise ModelError(f"the chat client sends {self.kind}, got shape {list(X.shape)}")
        return list(X)

    def body(self, clip: np.ndarray) -> dict:
        from edgeswitch.cloud.wire import encode_npy_data_url

        content = [{"type": "text", "text": self.prompt},
                   {"type": "file", "file": {"filename": "clip.npy",
                                             "file_data": encode_npy_data_url(clip)}}]
        return chat_body(content, max_tokens=16, top_logprobs=min(len(self.classes), 20))
