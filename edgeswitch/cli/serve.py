"""Subcommands of the deployed system: `serve-cloud`, `classify` and `log`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from edgeswitch.cli.common import (
    EXIT_CODES,
    REMOTE_ARGS,
    REMOTE_KEYS,
    close_hybrid,
    cloud_args,
    data_args,
    deployed_args,
    load_split,
    make_hybrid,
    out_file,
    port_number,
    positive_int,
    refuse_unused,
    stream_exit,
)
from edgeswitch.cli.flags import config_arg, config_flags, renamed_flag, resolve_config
from edgeswitch.cli.metrics import linger, metrics_args, start_metrics
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.extras import need_extra


def cmd_serve_cloud(args) -> int:
    need_extra("fastapi", "serve")
    need_extra("uvicorn", "serve")
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.serving.app import Fault, create_app
    from edgeswitch.serving.server import check_tls, serve

    full_cfg = resolve_config(args)
    cfg = full_cfg.serve
    token = credentials_of(args)
    check_tls(args.ssl_certfile, args.ssl_keyfile, args.tls_ca)
    faults = tuple(Fault.parse(f) for f in args.fault)
    model = OnnxClassifier(args.cloud, threads=cfg.threads)
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    if token is None and not loopback:
        print(f"edgeswitch: warning: serving on {args.host} without a token; anyone who can "
              "reach it can use the model", file=sys.stderr)
    if faults:
        print(f"edgeswitch: injecting faults {[f.kind for f in faults]}", file=sys.stderr)
    scheme = "https" if args.ssl_certfile else "http"

    def banner(port) -> str:
        return (f"serving {model.name} ({len(model.classes_)} classes) on {scheme}://"
                f"{args.host}:{port} with {cfg.server} (batch {cfg.max_batch}, wait "
                f"{cfg.max_wait_ms} ms, auth "
                f"{f'on, {len(token.devices)} devices' if token else 'off'}"
                f"{', client certificates required' if args.tls_ca else ''}"
                f"{', CORS for ' + ' '.join(cfg.cors_origins) if cfg.cors_origins else ''})")

    if cfg.server == "ray":
        need_extra("ray", "ray")
        if args.tls_ca:
            raise EdgeSwitchError("--tls-ca (client certificates) is not supported with "
                                  "--server ray; use --server fastapi")
        from edgeswitch.scale.ray_serve import serve_ray

        serve_ray(args.cloud, cfg, args.host, args.port, token, faults, args.model,
                  args.ssl_certfile, args.ssl_keyfile, args.ready_file,
                  on_ready=lambda port: print(banner(port), file=sys.stderr, flush=True),
                  ray_address=full_cfg.ray.address or None)
        return 0
    app = create_app(model, cfg, token=token, faults=faults, model_id=args.model)
    with ready_file(args.ready_file) as ready:
        banner_after_bind(app, lambda: banner(json.loads(ready.read_text())["port"]))
        serve(app, args.host, args.port, args.ssl_certfile, args.ssl_keyfile, str(ready),
              args.log_level, args.tls_ca)
    return 0


@contextmanager
def ready_file(given: str | None):
    """Where `serve` writes the bound port: --ready-file, or a temporary file."""
    if given:
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="edgeswitch-serve-") as d:
        yield Path(d) / "ready.json"


def banner_after_bind(app, banner: Callable[[], str]) -> None:
    """Print the banner once the socket is bound and the app has started, so that it names
    the port really bound (port 0 picks one) and a port in use prints only the error."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            print(banner(), file=sys.stderr, flush=True)
            yield state

    app.router.lifespan_context = lifespan




def credentials_of(args):
    """The server's device credentials (--token-file of either kind, else $EDGESWITCH_TOKEN;
    None: no auth), re-read on SIGHUP; and the access log opened where --access-log says."""
    import signal

    from edgeswitch.serving.access_log import open_access_log
    from edgeswitch.serving.credentials import resolve_credentials

    credentials = resolve_credentials(args.token_file)
    if credentials is not None and credentials.path is not None:
        signal.signal(signal.SIGHUP, credentials.mark_stale)
    open_access_log(args.access_log)
    return credentials


def make_cloud(args, classes: tuple[str, ...], runtime):
    """The cloud client a `classify` run talks to: a server URL, or a model in this process."""
    from edgeswitch.cloud.spec import CloudSpec
    from edgeswitch.cloud.tokens import resolve_token

    if not (args.cloud_url or args.cloud):
        raise EdgeSwitchError("classify needs --cloud-url (a server) or --cloud (an ONNX model)")
    if not args.cloud_url:
        refuse_unused(args, REMOTE_KEYS, REMOTE_ARGS,
                      f"to --cloud-url only (--cloud {args.cloud} runs in this process)")
    token = resolve_token(args.token_file) if args.cloud_url else None
    cloud = CloudSpec(model=args.cloud, url=args.cloud_url, token=token,
                      served_model=args.model, ca_cert=args.ca_cert,
                      client_cert=getattr(args, "tls_client_cert", None),
                      client_key=getattr(args, "tls_client_key", None),
                      runtime=runtime).build(classes)
    if args.cloud_url and args.model:
        _check_served_model(cloud, args.cloud_url, args.model)
    return cloud


def _check_served_model(cloud, url: str, model: str) -> None:
    """A --model the server does not list is a clear error before the first clip (the native
    protocol would be answered by the server's one model whatever the name). A server that
    cannot be asked now is not: the run starts, and its fallbacks say why."""
    try:
        served = cloud.served_models(2.0)
    except EdgeSwitchError:
        return
    if served and model not in served:
        cloud.close()
        raise EdgeSwitchError(f"the cloud server {url} serves {served}, not --model {model!r}")


def cmd_classify(args) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from edgeswitch.models import OnnxClassifier
    from edgeswitch.pipeline import check_clip_classes
    from edgeswitch.runtime.stream import StreamItem, run_stream

    edge = OnnxClassifier(args.edge)
    clips, _, cfg = load_split(args, edge.classes_)
    check_clip_classes(clips, edge)
    exporter = start_metrics(args, edge.classes_)  # None without --metrics-port
    metrics = exporter.metrics if exporter is not None else None
    try:
        hybrid = make_hybrid(args, edge, make_cloud(args, edge.classes_, cfg.runtime),
                             cfg.runtime.shadow_rate)
        if metrics is not None:
            metrics.track_threshold(hybrid)
        from edgeswitch.runtime.drift import open_drift

        drift = open_drift(hybrid.operating_point, cfg.drift, len(edge.classes_), hybrid.log)
        batch = cfg.runtime.batch
        # a file's streams in time order, one after another; a file that names none is one
        # stream (a device's recording)
        order = clips.stream_order()
        streams = clips.streams if clips.streams_given else np.full(len(clips), clips.name)
        items = (StreamItem(clips.X[idx], clips.ids[idx], clips.groups[idx],
                            streams=streams[idx])
                 for idx in (order[i:i + batch] for i in tqdm(
                     range(0, len(clips), batch), desc="classify", disable=args.quiet,
                     unit="call")))
        try:
            out = out_file(args.out)
            with out.open("w") as fh:
                summary = run_stream(hybrid, items, fh, metrics=metrics, drift=drift)
        except OSError as exc:
            raise EdgeSwitchError(f"cannot write --out {args.out}: {exc.strerror or exc}") \
                from None
        finally:
            close_hybrid(hybrid)
        code = stream_exit(summary, "classify",
                           f"wrote {out}" + (f", log {args.log}" if args.log else ""))
        linger(exporter, args.metrics_linger_s)
        return code
    finally:
        if exporter is not None:
            exporter.close()


def cmd_log(args) -> int:
    from edgeswitch.runtime.decision_log import DecisionLog, summary_text

    if not Path(args.db).is_file():
        raise EdgeSwitchError(f"decision log not found: {args.db}")
    with DecisionLog(args.db) as log:  # read-only; refuses a database that is not a log
        if args.drift:  # the drift history and the current state instead of the summary
            from edgeswitch.runtime.drift import drift_state, drift_text

            state = drift_state(log.drift_history())
            print(json.dumps(state, indent=1) if args.json else drift_text(state))
        else:
            summary = log.summary(args.buckets)
            print(json.dumps(summary, indent=1) if args.json else summary_text(summary))
        if args.export_dmd:
            records = log.dmd_records()
            path = records.to_parquet(args.export_dmd)
            print(f"wrote {len(records)} DMD records to {path}", file=sys.stderr)
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "serve-cloud", help="serve a cloud model over HTTP (FastAPI + uvicorn)",
        description="Serve an ONNX cloud model. Endpoints: POST /v1/classify (native batches), "
        "POST /v1/chat/completions and GET /v1/models (OpenAI-compatible subset), GET /healthz "
        "(no auth), GET /metrics (Prometheus). Requests arriving together are batched. The "
        "bearer token comes from --token-file or $EDGESWITCH_TOKEN; without one, no auth. TLS "
        "with --ssl-certfile and --ssl-keyfile.")
    p.add_argument("--cloud", required=True, help="cloud model (.onnx from train-models)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; use 0.0.0.0 only with a token and TLS)")
    p.add_argument("--port", type=port_number, default=8000,
                   help="port (default 8000; 0 = any free, the banner prints the one chosen)")
    p.add_argument("--model", default=None,
                   help="model name clients ask for (default: the model's own name)")
    p.add_argument("--token-file", default=None,
                   help="device token file (`edgeswitch tokens add`; re-read when it changes "
                   "or on SIGHUP), or a file with one shared bearer token (default: "
                   "$EDGESWITCH_TOKEN)")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--tls-ca", default=None,
                   help="mutual TLS: require client certificates signed by this CA (PEM)")
    p.add_argument("--access-log", default="-", metavar="FILE",
                   help="one line per request (device, method, path, status, ms): '-' = "
                   "stderr (default), a file, or 'off'")
    config_arg(p)
    config_flags(p, "serve")
    config_flags(p, "ray", prefix="ray-")
    renamed_flag(p, "--engine", "--server")
    p.add_argument("--fault", action="append", default=[], metavar="KIND[:S][@RATE]",
                   help="inject faults to test edge resilience: sleep:S, http500, malformed, "
                   "wrong_classes; @RATE = share of requests hit (default 1). Repeatable.")
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve_cloud)

    p = sub.add_parser(
        "classify", help="classify clips with edge + switcher + cloud; JSON lines out",
        description="Run the hybrid over a file of clips as a device would, --batch clips per "
        "call (default 1), and write one JSON line per clip: clip_id, label, answered_by, "
        "verified, fallback_reason, switcher_score, latency_ms (edge, cloud, total), proba. If "
        "the cloud does not answer by the deadline the edge answer stands with verified=false. "
        "A clip the edge model cannot digest gets a line {clip_id, error, model} instead. "
        + EXIT_CODES)
    data_args(p, "all")
    p.add_argument("--edge", required=True, help="edge model (.onnx)")
    deployed_args(p)
    cloud_args(p, "cloud model (.onnx) run in this process (or --cloud-url)")
    config_flags(p, "runtime")
    config_flags(p, "drift", prefix="drift-")
    p.add_argument("--out", default="predictions.jsonl", help="JSON lines output")
    metrics_args(p)
    add_common(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "log", help="summarise a decision log",
        description="Summarise a decision log written by `classify` or `demo`: offload rate "
        "over time, fallbacks by reason, per-class edge/cloud agreement, latencies. "
        "--export-dmd writes the decisions the cloud answered as DMD records (Parquet) for "
        "`train-switcher`. The file is opened read-only, and a database that is not a "
        "decision log is refused (never changed). After a crash, copy FILE-wal with FILE.")
    p.add_argument("db", help="decision log (.sqlite)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--buckets", type=positive_int, default=10,
                   help="time buckets (default 10)")
    p.add_argument("--export-dmd", default=None, help="write DMD records to this Parquet file")
    p.add_argument("--drift", action="store_true",
                   help="print the drift alarms raised and cleared, and the current state")
    p.set_defaults(func=cmd_log)
