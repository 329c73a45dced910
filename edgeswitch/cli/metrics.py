"""`--metrics-port`, `--metrics-host` and `--metrics-linger-s` of `classify` and `watch`: the
run's Prometheus metrics (runtime.metrics) served over HTTP while it runs.

A port and an address are where to listen, not settings of the method (as `serve-cloud`'s
--host and --port), so they are plain flags, not [runtime] config fields.

The exporter lingers `--metrics-linger-s` seconds after the last clip (default 0) so that a
Prometheus scraping every 15 s, or a test, sees the final counts of a short run; Ctrl-C ends
the wait at once.
"""

from __future__ import annotations

import argparse
import sys
import time

from edgeswitch.cli.common import non_negative, port_number
from edgeswitch.extras import need_extra


def metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=port_number, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics while the run "
                   "goes (clips, offloads, fallbacks by reason, cloud latency, switcher "
                   "score, agreement, threshold, drift); 0 = any free port, printed on stderr")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of --metrics-port (default 127.0.0.1; the metrics have no "
                   "auth, so bind beyond loopback only on a trusted network)")
    p.add_argument("--metrics-linger-s", type=non_negative, default=0.0, metavar="S",
                   help="keep serving the metrics S seconds after the run ends, so a scrape "
                   "sees the final counts (default 0; Ctrl-C ends the wait)")


def start_metrics(args, classes, hybrid=None):
    """The run's MetricsExporter, started (None without --metrics-port); a port in use is a
    clear error (exit 2)."""
    if getattr(args, "metrics_port", None) is None:
        return None
    need_extra("prometheus_client", "serve")
    from edgeswitch.runtime.metrics import LOOPBACK, EdgeMetrics, MetricsExporter

    if args.metrics_host not in LOOPBACK:
        print(f"edgeswitch: warning: serving metrics on {args.metrics_host} without auth; "
              "anyone who can reach it can read them", file=sys.stderr)
    metrics = EdgeMetrics(classes)
    if hybrid is not None:
        metrics.track_threshold(hybrid)
    exporter = MetricsExporter(metrics, args.metrics_host, args.metrics_port)
    print(f"{args.command}: metrics on {exporter.url}", file=sys.stderr, flush=True)
    return exporter


def linger(exporter, seconds: float) -> None:
    """Keep `exporter` up `seconds` more (Ctrl-C ends the wait), then the caller closes it."""
    if exporter is None or seconds <= 0:
        return
    print(f"edgeswitch: run done; metrics stay on {exporter.url} for {seconds:g} s "
          "(Ctrl-C ends)", file=sys.stderr, flush=True)
    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
    except KeyboardInterrupt:
        pass
