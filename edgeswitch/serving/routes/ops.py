"""Operations: `GET /healthz` (open, for load balancers) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from edgeswitch.serving.responses import ERROR_RESPONSES
from edgeswitch.serving.state import get_state

router = APIRouter(responses=ERROR_RESPONSES)
OPEN_PATHS = ("/healthz",)  # no token needed: load balancers probe it


@router.get("/healthz")
async def healthz(request: Request):
    state = get_state(request)
    return {"status": "ok", "model": state.model_id, "classes": list(state.classes),
            "clip_shape": list(state.clip_shape) if state.clip_shape else None}


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text format",
    "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus(request: Request):
    return Response(get_state(request).metrics.render(),
                    media_type="text/plain; version=0.0.4")
