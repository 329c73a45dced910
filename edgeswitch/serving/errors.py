"""Every error the app answers, in one registry: the OpenAI-style body
`{"error": {"message", "type", "code"}}` (serving.responses) for the wire format's refusals,
the request schema's, the framework's own (unknown route 404, wrong method 405, a body that
cannot be parsed: broken or too deeply nested JSON, bad UTF-8), and, as a last resort, any
unexpected exception (a 500 in the same shape, counted as `internal`; the fuzz tests hold
their number at zero). Each is counted in /metrics by its code.

The last resort is a pure-ASGI wrapper, not an `Exception` handler: Starlette answers those
from its outermost middleware and then re-raises, and uvicorn closes the keep-alive
connection on an exception; here the exception ends with the answer, and the connection lives.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edgeswitch.cloud.wire import WireError
from edgeswitch.serving.responses import error_response
from edgeswitch.serving.state import get_state, state_of

log = logging.getLogger("edgeswitch.serving")
HTTP_CODES = {400: "bad_json", 404: "not_found", 405: "method_not_allowed",
              413: "too_large", 415: "unsupported_media_type"}


async def wire_error(request: Request, exc: WireError) -> JSONResponse:
    """Clips that cannot be decoded, a model not served here...: the error's own status."""
    get_state(request).metrics.errors.labels(exc.code).inc()
    return error_response(exc.status, str(exc), exc.code)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Broken JSON is a 400; JSON that misses the schema is a 422 naming the first field."""
    errors = get_state(request).metrics.errors
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        errors.labels("bad_json").inc()
        return error_response(400, "request body is not valid JSON", "bad_json")
    first = errs[0] if errs else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")[:200]
    errors.labels("bad_request").inc()
    return error_response(422, f"invalid request: {where}: {str(first.get('msg', '?'))[:200]}",
                          "bad_request")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """The framework's own refusals (404, 405 with its Allow header, a body FastAPI could not
    parse) in our shape instead of `{"detail": ...}`."""
    code = HTTP_CODES.get(exc.status_code, "http_error")
    get_state(request).metrics.errors.labels(code).inc()
    if exc.status_code == 400:  # FastAPI's body parser: RecursionError, UnicodeDecodeError...
        message = "request body cannot be parsed (not UTF-8 JSON, or nested too deeply)"
    elif exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, message, code, dict(exc.headers or {}) or None)


class CatchAll:
    """Outermost: an exception no handler took is logged and answered 500 in our shape."""

    def __init__(self, app, fastapi_app: FastAPI) -> None:
        self.app, self.fastapi_app = app, fastapi_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            state_of(self.fastapi_app).metrics.errors.labels("internal").inc()
            if started:  # half an answer is out: nothing valid can follow it
                raise
            await error_response(500, "internal server error", "internal_error")(
                scope, receive, send)


HANDLERS = {WireError: wire_error, RequestValidationError: validation_error,
            HTTPException: http_error}


def register_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.add_middleware(CatchAll, fastapi_app=app)
