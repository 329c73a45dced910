"""The dashboard's HTTP app: the page, its vendored script and style, and the JSON it polls.

Read-only: GET routes only, and the log is opened read-only (see dashboard.view). With
`credentials` (the same device token files and `$EDGESWITCH_TOKEN` as `serve-cloud`,
serving.credentials) the API answers only a bearer token, checked by serving's own BearerAuth;
the page and its static files stay open, since they hold no data: the page asks for the token
(a login field, or `#token=...` in the URL) and sends it in the Authorization header of each
poll. The answers carry a Content-Security-Policy of 'self' only, so the page can load nothing
from the network even if a log held hostile text (the page also writes log text as text,
never as HTML).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from edgeswitch.serving.credentials import Credentials
from edgeswitch.serving.dashboard.view import MAX_BUCKETS, MAX_LAST, LogView
from edgeswitch.serving.metrics import ServerMetrics
from edgeswitch.serving.middleware import BearerAuth
from edgeswitch.serving.responses import error_response

STATIC = Path(__file__).parent / "static"
FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
OPEN_PATHS = frozenset({"/", "/healthz"} | {f"/static/{f}" for f in FILES})
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """Every answer: no framing, no network beyond this origin, no caching of the data."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with(message) -> None:
            if message["type"] == "http.response.start":
                message = message | {"headers": [
                    *message.get("headers", ()),
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, send_with)


def create_dashboard(view: LogView, credentials: Credentials | None = None) -> FastAPI:
    stack = [Middleware(SecurityHeaders)]
    if credentials is not None:  # serving's auth, with metrics of its own nobody scrapes
        stack.append(Middleware(BearerAuth, credentials=credentials, metrics=ServerMetrics(),
                                open_paths=OPEN_PATHS))
    app = FastAPI(title="edgeswitch dashboard", version="1", middleware=stack,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.view = view

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in FILES:  # only the vendored files, never a path the client names
            raise HTTPException(404)
        return FileResponse(STATIC / name, media_type=FILES[name])

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "log": str(view.path)}

    @app.get("/api/summary")
    def summary(buckets: int = Query(30, ge=1, le=MAX_BUCKETS),
                last: int = Query(20, ge=1, le=MAX_LAST)) -> dict:
        return view.summary(buckets, last)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                  "http_error")
        return error_response(exc.status_code, f"{request.method} {request.url.path[:200]}: "
                              f"{exc.detail}", code)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))[:200]
        return error_response(422, f"invalid request: {where}: "
                              f"{str(first.get('msg', '?'))[:200]}", "bad_request")

    return app
