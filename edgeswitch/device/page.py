"""`edgeswitch device-page`: the device artifact running in a browser, served on loopback.

The page (edgeswitch/device/web/) loads `device.onnx` into onnxruntime-web (WASM, from the
npm package's dist files that this server hands out itself: no CDN), steps it clip by clip on
the phone's motion sensors or on a recorded stream (`GET /replay.json`), offloads the clips
the model asks for to `serve-cloud` (`POST /v1/classify` with the device's bearer token) and
shows the answer, who gave it and the offload rate.

Routes, GET only: the page and its script and style; `/config.json` (the cloud's URL, the
device token, the cloud deadline, whether a replay is served); `/model/device.onnx`,
`/model/device.int8.onnx` (when exported: the page's `?graph=int8`) and `/model/device.json`
from the artifact folder; `/ort/...` (a fixed list of onnxruntime-web's
files); `/replay.json` (the `--replay` clips in stream order, float32 base64 as on the wire).
The page gets the token from `/config.json`, so whoever can load the page can use the token:
the server binds loopback unless told otherwise. A Content-Security-Policy allows scripts and
WASM from this origin only and network requests to this origin and the cloud's.

This module reads files and serves them; nothing here runs the model.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from edgeswitch.errors import EdgeSwitchError

WEB = Path(__file__).parent / "web"
PAGE_FILES = {"device.js": "text/javascript", "device.css": "text/css"}
ORT_FILES = {"ort.wasm.min.js": "text/javascript",          # the API, a global `ort`
             "ort-wasm-simd-threaded.mjs": "text/javascript",  # the WASM's loader
             "ort-wasm-simd-threaded.wasm": "application/wasm"}
ARTIFACT_FILES = {"device.onnx": "application/octet-stream",
                  "device.int8.onnx": "application/octet-stream",   # the page's ?graph=int8
                  "device.json": "application/json"}
ORT_ENV = "EDGESWITCH_ORT_WEB"   # onnxruntime-web's dist folder, if not device/node_modules
# the repository's device/ folder, where scripts/install-browser.sh runs `npm ci`
DEFAULT_ORT = Path(__file__).resolve().parents[2] / "device" / "node_modules" / \
    "onnxruntime-web" / "dist"


def find_ort(given: str | Path | None = None) -> Path:
    """onnxruntime-web's dist folder: `given`, else $EDGESWITCH_ORT_WEB, else the repository's
    device/node_modules; a clear error naming the missing file and how to install it."""
    where = Path(given or os.environ.get(ORT_ENV) or DEFAULT_ORT)
    missing = [f for f in ORT_FILES if not (where / f).is_file()]
    if missing:
        raise EdgeSwitchError(
            f"onnxruntime-web not found in {where} (missing {', '.join(missing)}): run "
            "`npm ci` in the repository's device/ folder (scripts/install-browser.sh does), "
            f"or point --ort-dir or ${ORT_ENV} at the dist folder of onnxruntime-web")
    return where


def check_artifact(folder: str | Path) -> dict[str, Any]:
    """The artifact folder's device.json (checked by device.spec) and its float graph,
    device.onnx; returns the description. Whether the two belong together the page checks
    itself (the graph's SHA-256), and shows."""
    from edgeswitch.device.spec import GRAPH_FILES, read_spec

    spec = read_spec(folder)
    if not (Path(folder) / GRAPH_FILES["float"]).is_file():
        raise EdgeSwitchError(f"{folder}: no {GRAPH_FILES['float']} beside device.json (copy "
                              "the exported folder whole)")
    return spec


def replay_json(path: str | Path, classes: tuple[str, ...]) -> dict[str, Any]:
    """A clip file (.npz, as `classify --data` reads it) as the page replays it: every stream
    in time order, the clips as float32 base64 (exact, as on the wire), and the file's
    `sample_rate_hz` (null when it names none). The clip shape and rate are not checked here:
    the page checks them against the model and says what is wrong."""
    from edgeswitch.data.loaders import load_npz

    clips = load_npz(Path(path), classes)
    order = clips.stream_order()
    X = np.ascontiguousarray(clips.X[order], dtype="<f4")
    return {"name": clips.name, "classes": list(clips.classes),
            "ids": [str(i) for i in clips.ids[order]],
            "streams": [str(s) for s in clips.streams[order]],
            "sample_rate_hz": clips.sample_rate_hz,
            "clips": {"shape": list(X.shape), "dtype": "float32",
                      "b64": base64.b64encode(X.tobytes()).decode("ascii")}}


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL (what CORS and the page's CSP name)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EdgeSwitchError(f"the cloud URL must be http(s)://host[:port], got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def csp(cloud_url: str | None) -> str:
    """Scripts and WASM from this origin only; requests to this origin and the cloud's."""
    cloud = f" {origin_of(cloud_url)}" if cloud_url else ""
    return ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
            f"img-src 'self' data:; connect-src 'self'{cloud}; worker-src 'self'; "
            "frame-ancestors 'none'")


class _Headers:
    """Every answer: the CSP, no sniffing, no caching (a new artifact is loaded fresh)."""

    def __init__(self, app, policy: str) -> None:
        self.app, self.headers = app, [(b"content-security-policy", policy.encode()),
                                       (b"x-content-type-options", b"nosniff"),
                                       (b"cache-control", b"no-store")]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with(message) -> None:
            if message["type"] == "http.response.start":
                message = message | {"headers": [*message.get("headers", ()), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with)


def create_page(artifact: str | Path, cloud_url: str | None, token: str | None,
                replay: dict[str, Any] | None = None, deadline_ms: float = 500.0,
                ort_dir: str | Path | None = None) -> FastAPI:
    """The page's app. `artifact`: the folder of device.onnx and device.json; `cloud_url`:
    serve-cloud (None: the device answers alone); `replay`: `replay_json`'s clips."""
    artifact, ort = Path(artifact), find_ort(ort_dir)
    check_artifact(artifact)
    if cloud_url:
        origin_of(cloud_url)
    app = FastAPI(title="edgeswitch device page", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(_Headers, policy=csp(cloud_url))
    replay_body = None if replay is None else json.dumps(replay).encode()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        return _named(WEB, PAGE_FILES, name)

    @app.get("/ort/{name}", include_in_schema=False)
    def ort_file(name: str) -> FileResponse:
        return _named(ort, ORT_FILES, name)

    @app.get("/model/{name}", include_in_schema=False)
    def model_file(name: str) -> FileResponse:
        return _named(artifact, ARTIFACT_FILES, name)

    @app.get("/config.json")
    def config() -> dict[str, Any]:
        return {"cloud_url": cloud_url.rstrip("/") if cloud_url else None, "token": token,
                "deadline_ms": deadline_ms, "replay": replay is not None}

    @app.get("/replay.json")
    def replay_clips() -> Response:
        if replay_body is None:
            raise HTTPException(404, "no --replay file")
        return Response(replay_body, media_type="application/json")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": f"{request.url.path[:200]}: {exc.detail}"}},
                            status_code=exc.status_code)

    return app


def _named(folder: Path, files: dict[str, str], name: str) -> FileResponse:
    if name not in files or not (folder / name).is_file():  # only the listed files
        raise HTTPException(404, "not found")
    return FileResponse(folder / name, media_type=files[name])
