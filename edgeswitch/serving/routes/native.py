"""`POST /v1/classify`: the native API, a batch of clips in, one probability row per clip out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from edgeswitch.cloud.wire import decode_clips
from edgeswitch.serving.inference import answer
from edgeswitch.serving.state import get_state

router = APIRouter()


class ClassifyRequest(BaseModel):
    clips: dict = Field(description="{'shape': [n, T, C], 'dtype': 'float32', 'b64': ...}")
    model: str | None = None


@router.post("/v1/classify")
async def classify_native(req: ClassifyRequest, request: Request):
    state = get_state(request)
    state.check_model(req.model)
    X = decode_clips(req.clips, state.clip_shape, state.cfg.max_clips)
    proba = await answer(state, X)
    if isinstance(proba, Response):
        return proba
    classes = state.classes
    return {"model": state.model_id, "classes": list(classes),
            "proba": proba.round(7).tolist(),
            "labels": [classes[i] for i in proba.argmax(axis=1)]}
