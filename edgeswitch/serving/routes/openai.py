"""The OpenAI-compatible subset: `POST /v1/chat/completions` (one clip per request, as a `.npy`
file content part; the reply names the label and carries per-class top logprobs) and
`GET /v1/models`."""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from edgeswitch.cloud.wire import WireError, decode_npy_data_url
from edgeswitch.serving.inference import answer
from edgeswitch.serving.responses import ERROR_RESPONSES
from edgeswitch.serving.state import get_state

router = APIRouter(responses=ERROR_RESPONSES)


class FileData(BaseModel):
    model_config = ConfigDict(extra="allow")
    file_data: str | None = Field(default=None, description="data:application/x-npy;base64,"
                                  "... holding one clip [T, C] as a .npy file")
    filename: str | None = None


class ContentPart(BaseModel):
    """A content part: "text" (read by VLMs, ignored here) or "file" (the clip)."""

    model_config = ConfigDict(extra="allow")  # image_url and other kinds pass through
    type: str
    text: str | None = None
    file: FileData | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens...: accepted, unused
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str
    classes: list[str]


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    model: str
    choices: list[dict]
    usage: dict


@router.get("/v1/models", responses={200: {"model": ModelList}})
async def models(request: Request):
    state = get_state(request)
    return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0,
                                        "owned_by": "edgeswitch",
                                        "classes": list(state.classes)}]}


@router.post("/v1/chat/completions", responses={200: {"model": ChatCompletion}})
async def chat(req: ChatRequest, request: Request):
    state = get_state(request)
    state.check_model(req.model)
    X = decode_npy_data_url(clip_part(req), state.clip_shape, state.max_body, state.input_bound)
    proba = await answer(state, X)
    if isinstance(proba, Response):
        return proba
    return chat_reply(state.model_id, state.classes, proba[0], req.logprobs, req.top_logprobs)


def clip_part(req: ChatRequest) -> str:
    """The data URL of the one clip in the last user message."""
    users = [m for m in req.messages if m.role == "user"]
    parts = users[-1].content if users else None
    files = [p for p in parts if p.type == "file"] if isinstance(parts, list) else []
    if len(files) != 1:
        raise WireError(f"the last user message must carry exactly one clip as a 'file' content "
                        f"part, found {len(files)}", "bad_content_part", 400)
    file = files[0].file
    if file is None or file.file_data is None:
        raise WireError("the clip's 'file' part must be an object with 'file_data'",
                        "bad_content_part", 400)
    return file.file_data


def chat_reply(model_id: str, classes: tuple[str, ...], p: np.ndarray, logprobs: bool,
               top: int | None) -> dict:
    """A chat completion whose one token is the label; with `logprobs`, the `top` most likely
    classes as its top logprobs (the client turns them back into probabilities)."""
    k = int(np.argmax(p))
    logp = [math.log(max(float(v), 1e-30)) for v in p]

    def entry(i: int) -> dict:
        return {"token": classes[i], "logprob": logp[i], "bytes": list(classes[i].encode())}

    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": classes[k]}}
    if logprobs:
        order = np.argsort(-p, kind="stable")[: (top or 0)]
        choice["logprobs"] = {"content": [entry(k) | {"top_logprobs": [entry(int(i))
                                                                       for i in order]}]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_id, "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}}
