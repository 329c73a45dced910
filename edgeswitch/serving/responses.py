"""The JSON error body every refusal and failure answers with (OpenAI's shape)."""

from __future__ import annotations

from fastapi.responses import JSONResponse


def error_response(status: int, message: str, code: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI-style error body, so the official client surfaces the message."""
    kind = "authentication_error" if status == 401 else \
        "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)
