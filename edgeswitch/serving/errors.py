"""The app's exception handlers, registered in one place: a request the wire format or the
request schema refuses gets the JSON error body with its status, and is counted by kind."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edgeswitch.cloud.wire import WireError
from edgeswitch.serving.responses import error_response
from edgeswitch.serving.state import get_state


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
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    errors.labels("bad_request").inc()
    return error_response(422, f"invalid request: {where}: {first.get('msg', '?')}",
                          "bad_request")


HANDLERS = {WireError: wire_error, RequestValidationError: validation_error}


def register_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
