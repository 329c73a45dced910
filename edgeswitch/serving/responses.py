"""The JSON error body every refusal and failure answers with (OpenAI's shape), and its schema
for the OpenAPI document (so clients and schemathesis know what a 4xx/5xx holds)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorBody(BaseModel):
    """`{"error": {"message", "type", "code"}}`: every error this server answers."""

    error: ErrorDetail


# what every route documents besides its answer (FastAPI's own 422 schema is not ours)
ERROR_RESPONSES: dict = {"4XX": {"model": ErrorBody, "description": "refused request"},
                         "5XX": {"model": ErrorBody, "description": "server failure"}}


def error_response(status: int, message: str, code: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI-style error body, so the official client surfaces the message."""
    kind = "authentication_error" if status == 401 else \
        "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)
