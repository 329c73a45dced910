"""`edgeswitch dashboard DB`: a live web page over a decision log (serving.dashboard)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from edgeswitch.cli.common import port_number
from edgeswitch.cli.serve import banner_after_bind, ready_file
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.extras import need_extra

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def cmd_dashboard(args) -> int:
    need_extra("fastapi", "serve")
    need_extra("uvicorn", "serve")
    from edgeswitch.serving.credentials import resolve_credentials
    from edgeswitch.serving.dashboard.app import create_dashboard
    from edgeswitch.serving.dashboard.view import LogView
    from edgeswitch.serving.server import check_tls, serve

    credentials = resolve_credentials(args.token_file)
    if credentials is None and args.host not in LOOPBACK:
        raise EdgeSwitchError(f"--host {args.host} reaches beyond this machine: give "
                              "--token-file (or $EDGESWITCH_TOKEN), as for serve-cloud; the "
                              "dashboard shows a device's decisions")
    if credentials is not None and credentials.path is not None:
        signal.signal(signal.SIGHUP, credentials.mark_stale)
    check_tls(args.ssl_certfile, args.ssl_keyfile)
    view = LogView(Path(args.db), Path(args.events) if args.events else None)
    view.check()  # a file that is not a decision log: refused now, not a page that waits
    app = create_dashboard(view, credentials)
    scheme = "https" if args.ssl_certfile else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host

    def banner(port) -> str:
        return (f"dashboard of {args.db} on {scheme}://{host}:{port}/ (auth "
                f"{f'on, {len(credentials.devices)} devices' if credentials else 'off'}"
                f"{', events ' + args.events if args.events else ''})")

    try:
        with ready_file(args.ready_file) as ready:
            banner_after_bind(app, lambda: banner(json.loads(ready.read_text())["port"]))
            serve(app, args.host, args.port, args.ssl_certfile, args.ssl_keyfile, str(ready),
                  args.log_level)
    finally:
        view.close()
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "dashboard", help="a live web page over a decision log",
        description="Serve a local web page that follows a decision log while `classify` or "
        "`watch` writes it: clips, offload rate and fallbacks over time, edge/cloud "
        "agreement per class, latency percentiles, drift state (when a drift monitor writes "
        "the log's drift table), devices, the last decisions, and fall events from "
        "`watch --events FILE`. The page polls GET /api/summary (JSON) every second and "
        "loads nothing from the network. Read-only: the log is opened read-only and a "
        "database that is not a decision log is refused. Off loopback a token is required "
        "(--token-file or $EDGESWITCH_TOKEN, as for serve-cloud); open the page with "
        "#token=TOKEN in the URL or type it in.")
    p.add_argument("db", help="decision log (.sqlite) written by classify, watch or demo; "
                   "it may not exist yet (the page waits for it)")
    p.add_argument("--events", default=None, metavar="FILE",
                   help="fall events (JSON lines) written by `watch --events FILE`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; any other needs a token, and TLS is advised)")
    p.add_argument("--port", type=port_number, default=8050,
                   help="port (default 8050; 0 = any free, the banner prints the one chosen)")
    p.add_argument("--token-file", default=None,
                   help="device token file (`edgeswitch tokens add`) or a file with one "
                   "shared bearer token (default: $EDGESWITCH_TOKEN; none: no auth)")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_dashboard)

