"""`POST /v1/classify`: the native API, a batch of clips in, one probability row per clip out."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from edgeswitch.cloud.wire import decode_clips
from edgeswitch.serving.inference import answer
from edgeswitch.serving.responses import ERROR_RESPONSES
from edgeswitch.serving.state import get_state

router = APIRouter(responses=ERROR_RESPONSES)


class Clips(BaseModel):
    """A clip batch `[n, T, C]` float32 as its raw little-endian bytes in base64 (cloud.wire).
    The shape is checked against the server's limits before anything is decoded."""

    shape: list[int] = Field(min_length=3, max_length=3,
                             description="[n, T, C]: clips, samples per clip, channels")
    dtype: Literal["float32", "<f4"] = "float32"
    b64: str = Field(description="n*T*C little-endian float32 values, base64")


class ClassifyRequest(BaseModel):
    clips: Clips
    model: str | None = Field(default=None, description="the served model's id (optional)")


class ClassifyResponse(BaseModel):
    model: str
    classes: list[str]
    proba: list[list[float]] = Field(description="one row per clip, over `classes`")
    labels: list[str]


@router.post("/v1/classify", responses={200: {"model": ClassifyResponse}})
async def classify_native(req: ClassifyRequest, request: Request):
    state = get_state(request)
    state.check_model(req.model)
    X = decode_clips(req.clips.model_dump(), state.clip_shape, state.cfg.max_clips,
                     state.max_body, state.input_bound)
    proba = await answer(state, X)
    if isinstance(proba, Response):
        return proba
    classes = state.classes
    return {"model": state.model_id, "classes": list(classes),
            "proba": proba.round(7).tolist(),
            "labels": [classes[i] for i in proba.argmax(axis=1)]}
