"""`edgeswitch device-page DIR`: the device artifact in a browser (device.page)."""

from __future__ import annotations

import argparse
import json

from edgeswitch.cli.common import port_number
from edgeswitch.cli.flags import config_arg, config_flags, resolve_config
from edgeswitch.cli.serve import banner_after_bind, ready_file
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.extras import need_extra

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def cmd_device_page(args: argparse.Namespace) -> int:
    need_extra("fastapi", "serve")
    need_extra("uvicorn", "serve")
    from edgeswitch.cloud.tokens import resolve_token
    from edgeswitch.device.page import check_artifact, create_page, replay_json
    from edgeswitch.serving.server import check_tls, serve

    if args.host not in LOOPBACK and not args.ssl_certfile:
        raise EdgeSwitchError(f"--host {args.host} reaches beyond this machine: the page hands "
                              "out the device token and a phone's motion sensors need https; "
                              "give --ssl-certfile and --ssl-keyfile")
    check_tls(args.ssl_certfile, args.ssl_keyfile)
    token = resolve_token(args.token_file) if args.cloud else None
    spec = check_artifact(args.dir)
    replay = replay_json(args.replay, tuple(spec["classes"])) if args.replay else None
    deadline_ms = resolve_config(args).runtime.deadline_ms  # how long the page waits
    app = create_page(args.dir, args.cloud, token, replay, deadline_ms, args.ort_dir)
    scheme = "https" if args.ssl_certfile else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host

    def banner(port) -> str:
        origin = f"{scheme}://{host}:{port}"
        cloud = (f"cloud {args.cloud} (auth {'on' if token else 'off'}; it must allow this "
                 f"origin: serve-cloud --cors-origins {origin})") if args.cloud else "no cloud"
        clips = f", replay of {len(replay['ids'])} clips" if replay else ""
        return f"device page of {args.dir} on {origin}/ ({cloud}{clips})"

    with ready_file(args.ready_file) as ready:
        banner_after_bind(app, lambda: banner(json.loads(ready.read_text())["port"]))
        serve(app, args.host, args.port, args.ssl_certfile, args.ssl_keyfile, str(ready),
              args.log_level)
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "device-page", help="the device artifact in a browser (motion sensors or a replay)",
        description="Serve a page that runs the device artifact (`edgeswitch export-device`: "
        "device.onnx and device.json) in the browser with onnxruntime-web (WASM, served from "
        "this machine's device/node_modules; no CDN), on the phone's motion sensors "
        "(DeviceMotion, resampled to the model's rate) or on a recorded stream (--replay). "
        "It keeps the stream state, offloads the clips the model asks for to serve-cloud "
        "with the device token (the cloud must allow this page's origin: serve-cloud "
        "--cors-origins), and shows the answer, who gave it (edge, cloud, or edge when the "
        "cloud did not answer) and the offload rate. Binds 127.0.0.1: the page hands out the "
        "token, and motion sensors need https or localhost.")
    p.add_argument("dir", help="folder with device.onnx and device.json")
    p.add_argument("--cloud", default=None, metavar="URL",
                   help="serve-cloud's URL (none: the device answers every clip alone)")
    p.add_argument("--token-file", default=None,
                   help="file whose first line is the device's bearer token (default: "
                   "$EDGESWITCH_TOKEN; none: no auth)")
    p.add_argument("--replay", default=None, metavar="CLIPS.npz",
                   help="a recorded stream the page can replay (GET /replay.json): clips "
                   "as classify --data reads them, streams in time order")
    config_arg(p)
    config_flags(p, "runtime", only=("deadline_ms",), title="the cloud's deadline")
    p.add_argument("--ort-dir", default=None, metavar="DIR",
                   help="onnxruntime-web's dist folder (default: $EDGESWITCH_ORT_WEB, else "
                   "device/node_modules/onnxruntime-web/dist in the repository)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; any other needs TLS)")
    p.add_argument("--port", type=port_number, default=8060,
                   help="port (default 8060; 0 = any free, the banner prints the one chosen)")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_device_page)
