"""A small OpenAI-compatible vision "model" for tests: a real HTTP server on loopback.

It is a TEST DOUBLE for a VLM such as one served by vLLM or Ollama. It checks each request as
a real server would (images must be JPEG data URLs, the prompt must list the labels) and
answers from the last image with a crude rule: dark figure wider than tall -> "fall". The
`model` name picks the reply style, to exercise the client's parsing:
  json-logprobs  {"label": ...} with per-token top logprobs (vLLM with json_schema)
  json           {"label": ...}, no logprobs (Ollama)
  text           a sentence that names the label
  fenced         a Markdown code fence around the JSON
  think          a <think> block, then the label
  slow           answers after `slow_s` (3 s), or when `gate` (a threading.Event) is set,
                 if that comes first                   broken  HTTP 500
Faults for the client's resilience: `fail_next` (settable while it runs) answers that many
chat requests with HTTP 503 before it answers again; `tls=(cert, key)` serves https.
`answered` counts the chat requests it has answered.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import socket
import threading
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

STYLES = ("json-logprobs", "json", "text", "fenced", "think", "slow", "broken")


def looks_fallen(jpeg: bytes) -> bool:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    ys, xs = np.nonzero(img < 100)
    if len(xs) < 20:
        return False
    return (xs.max() - xs.min()) > 1.2 * (ys.max() - ys.min())


def make_app(seen: list, faults: dict) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": s, "object": "model"} for s in STYLES]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        style = body.get("model")
        if style not in STYLES:
            return JSONResponse({"error": {"message": f"no model {style}"}}, status_code=404)
        parts = body["messages"][-1]["content"]
        text = " ".join(p["text"] for p in parts if p["type"] == "text")
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        if not images or not all(u.startswith("data:image/jpeg;base64,") for u in images):
            return JSONResponse({"error": {"message": "expected JPEG data URLs"}},
                                status_code=400)
        if "adl" not in text or "fall" not in text:
            return JSONResponse({"error": {"message": "prompt lists no labels"}},
                                status_code=400)
        if faults["fail_next"] > 0:
            faults["fail_next"] -= 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if style == "broken":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if style == "slow" and faults["gate"] is None:
            await asyncio.sleep(faults["slow_s"])
        elif style == "slow":
            await asyncio.to_thread(faults["gate"].wait, faults["slow_s"])
        label = "fall" if looks_fallen(base64.b64decode(images[-1].split(",", 1)[1])) \
            else "adl"
        other = "adl" if label == "fall" else "fall"
        content = {"json-logprobs": json.dumps({"label": label}), "json": json.dumps(
            {"label": label}), "text": f"The person seems to be doing this: {label}.",
            "fenced": f"```json\n{json.dumps({'label': label})}\n```",
            "think": f"<think>fall or adl? looking at posture</think>{label}",
            "slow": label}[style]
        choice = {"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": content}, "logprobs": None}
        if style == "json-logprobs" and body.get("logprobs"):
            def tok(t, p):
                return {"token": t, "logprob": math.log(p), "bytes": list(t.encode())}
            head = label[:2]  # labels split over tokens, as real tokenizers do
            choice["logprobs"] = {"content": [
                tok('{"', 1.0) | {"top_logprobs": [tok('{"', 1.0)]},
                tok("label", 1.0) | {"top_logprobs": [tok("label", 1.0)]},
                tok('":"', 1.0) | {"top_logprobs": [tok('":"', 1.0)]},
                tok(head, 0.8) | {"top_logprobs": [tok(head, 0.8), tok(other[:2], 0.15)]},
                tok(label[2:], 1.0) | {"top_logprobs": [tok(label[2:], 1.0)]}]}
        faults["answered"] += 1
        return {"id": "x", "object": "chat.completion", "model": style, "choices": [choice]}

    return app


class FakeVLM:
    """`with FakeVLM() as vlm: vlm.url` -> http://127.0.0.1:PORT/v1 (uvicorn in a thread)."""

    def __init__(self, slow_s: float = 3.0, tls: tuple[str, str] | None = None,
                 gate: threading.Event | None = None) -> None:
        self.seen: list[dict] = []
        self.faults = {"fail_next": 0, "slow_s": slow_s, "gate": gate, "answered": 0}
        self.tls = tls

    @property
    def answered(self) -> int:
        return self.faults["answered"]

    @property
    def fail_next(self) -> int:
        return self.faults["fail_next"]

    @fail_next.setter
    def fail_next(self, n: int) -> None:
        self.faults["fail_next"] = n

    def __enter__(self) -> FakeVLM:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}/v1"
        tls = {"ssl_certfile": self.tls[0], "ssl_keyfile": self.tls[1]} if self.tls else {}
        self.server = uvicorn.Server(uvicorn.Config(make_app(self.seen, self.faults),
                                                    log_level="warning", **tls))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        t_end = time.monotonic() + 60  # a busy machine can take seconds to start it
        while not self.server.started and self.thread.is_alive() and time.monotonic() < t_end:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the test VLM server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


if __name__ == "__main__":  # python -m tests.fake_vlm READY_FILE: serve until killed
    import sys
    from pathlib import Path

    with FakeVLM() as vlm:
        Path(sys.argv[1]).write_text(vlm.url)
        while True:
            time.sleep(1)
