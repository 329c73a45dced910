"""Prometheus metrics of an edge run (`classify`, `watch`), in a registry of their own, and the
small HTTP exporter that serves them (`--metrics-port`).

A registry per run, never prometheus_client's global one: two runs in one process (tests, a
notebook) must not add to each other's counts, and the exporter shows only these families.
Every label is bounded: `reason` takes FallbackReason values (a fixed enum; `http_<status>`
only for 429 and 5xx), `kind` is offloaded | shadow, `result` agree | disagree, `edge_class`
the edge model's classes (at most MAX_CLASS_LABELS, the rest "other"). The labels a
dashboard plots are created at 0 so a panel has a series before the first event.

Names carry the `edgeswitch_edge_` prefix: the cloud server's families (serving.metrics) are
`edgeswitch_*`, and one Prometheus scrapes both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.errors import EdgeSwitchError

PREFIX = "edgeswitch_edge_"
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # trust scores are in [0, 1]
LAG_BUCKETS = (.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
BYTES_BUCKETS = (1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6)
MAX_CLASS_LABELS = 64
KINDS = ("offloaded", "shadow")
RESULTS = ("agree", "disagree")
# watch's drops (runtime.async_cloud, video.live): queue_full, drain_deadline, no_person
DROP_REASONS = (str(FallbackReason.QUEUE_FULL), str(FallbackReason.DRAIN_DEADLINE),
                str(FallbackReason.NO_PERSON))


def _reason(value) -> str:
    """A fallback reason as a label: a FallbackReason value, anything else `error` (bounded)."""
    try:
        return str(FallbackReason(str(value)))
    except ValueError:
        return str(FallbackReason.ERROR)


class EdgeMetrics:
    """The families of one edge run; `classes` bound the per-class agreement labels."""

    def __init__(self, classes: Sequence[str]) -> None:
        r = self.registry = CollectorRegistry()
        self.classes = tuple(str(c) for c in classes)
        self._class_labels = set(self.classes[:MAX_CLASS_LABELS])
        p = PREFIX
        self.clips = Counter(p + "clips", "Clips answered (a JSON line with a label)",
                             registry=r)
        self.clips_failed = Counter(p + "clips_failed", "Clips with an error record instead "
                                    "of an answer (the edge model could not digest them)",
                                    registry=r)
        self.offloads = Counter(p + "offloads", "Clips the router sent to the cloud",
                                registry=r)
        self.fallbacks = Counter(p + "fallbacks", "Offloaded clips the cloud did not answer "
                                 "(the edge answer stands), by FallbackReason", ["reason"],
                                 registry=r)
        self.cloud_answers = Counter(p + "cloud_answers", "Clips answered by the cloud "
                                     "(offloaded and answered in time)", registry=r)
        self.cloud_latency = Histogram(p + "cloud_latency_seconds", "Time of one cloud "
                                       "request (retries included), per request that was "
                                       "sent", buckets=LATENCY_BUCKETS, registry=r)
        self.score = Histogram(p + "switcher_score", "The router's trust score per clip "
                               "(offloaded when below the threshold)", buckets=SCORE_BUCKETS,
                               registry=r)
        self.agreement = Counter(p + "agreement", "Clips the cloud answered, by whether its "
                                 "label is the edge's; kind: offloaded (a biased sample) or "
                                 "shadow (a random one)", ["kind", "result"], registry=r)
        self.class_agreement = Counter(p + "class_agreement", "As edgeswitch_edge_agreement, "
                                       "by the edge's class", ["kind", "edge_class", "result"],
                                       registry=r)
        self.threshold = Gauge(p + "threshold", "The operating threshold on the switcher score "
                               "now (an adaptive controller moves it)", registry=r)
        self.drift_alarm = Gauge(p + "drift_alarm", "1 while the drift detector's alarm is "
                                 "raised, else 0", registry=r)
        self.drift_statistic = Gauge(p + "drift_statistic", "The drift detector's last "
                                     "windowed test statistic", registry=r)
        # watch only (its own asynchronous loop, video.live)
        self.queue_depth = Gauge(p + "queue_depth", "Offloaded clips waiting for a cloud "
                                 "worker (watch)", registry=r)
        self.dropped = Counter(p + "dropped", "Offloaded clips settled without a cloud answer "
                               "because of the queue (watch): queue_full, drain_deadline, "
                               "no_person", ["reason"], registry=r)
        self.lag = Histogram(p + "lag_seconds", "How long after a clip's end in real time its "
                             "line was written (watch, paced or live)", buckets=LAG_BUCKETS,
                             registry=r)
        self.sent_bytes = Histogram(p + "sent_bytes", "Bytes sent to the cloud per offloaded "
                                    "clip (watch)", buckets=BYTES_BUCKETS, registry=r)
        self.fall_events = Counter(p + "fall_events", "Fall events closed (watch --events)",
                                   registry=r)
        self.drift_alarm.set(0)
        self.drift_statistic.set(float("nan"))  # no test has run yet
        for reason in FallbackReason:
            self.fallbacks.labels(str(reason))
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for kind in KINDS:
            for result in RESULTS:
                self.agreement.labels(kind, result)
                for name in sorted(self._class_labels):
                    self.class_agreement.labels(kind, name, result)
        self._lock = threading.Lock()  # watch observes from its cloud worker threads too

    # -- what the loops call ----------------------------------------------------------------
    def observe_call(self, hybrid, res) -> None:
        """One hybrid call of runtime.stream (`res` a HybridResult)."""
        off = np.asarray(res.offloaded, bool)
        verified = np.asarray(res.verified, bool)
        answered = ~np.isnan(np.asarray(res.cloud_proba, float)[:, 0])
        edge_label = res.edge.proba.argmax(axis=1)
        with self._lock:
            self.clips.inc(len(off))
            self.offloads.inc(int(off.sum()))
            for s in np.asarray(res.score, float):
                self.score.observe(float(s))
            for why in res.reason[off & ~verified]:
                self.fallbacks.labels(_reason(why)).inc()
            self.cloud_answers.inc(int((np.asarray(res.answered_by) == "cloud").sum()))
            # one request per call that asked (0 ms: not sent, e.g. circuit open, no cloud)
            if (off.any() or answered.any()) and res.cloud_ms > 0:
                self.cloud_latency.observe(res.cloud_ms / 1000)
            if answered.any():
                cloud_label = np.nanargmax(np.where(answered[:, None], res.cloud_proba, 0),
                                           axis=1)
                for i in np.flatnonzero(answered):
                    self._agree("offloaded" if off[i] else "shadow", int(edge_label[i]),
                                int(cloud_label[i]))
            self.track_threshold(hybrid)

    def clip_failed(self) -> None:
        with self._lock:
            self.clips_failed.inc()

    def edge_clip(self, hybrid, score: float, offloaded: bool, lag_s: float | None) -> None:
        """watch: a clip's first line (the edge's answer)."""
        with self._lock:
            self.clips.inc()
            self.offloads.inc(int(offloaded))
            self.score.observe(float(score))
            if lag_s is not None:
                self.lag.observe(max(lag_s, 0.0))
            self.track_threshold(hybrid)

    def settled(self, edge_label: int, cloud_label: int | None, reason: str | None,
                dropped: bool, latency_s: float | None, sent_bytes: int | None) -> None:
        """watch: an offloaded clip settled: the cloud's answer (`cloud_label`), or why not."""
        with self._lock:
            if cloud_label is not None:
                self.cloud_answers.inc()
                self._agree("offloaded", edge_label, cloud_label)
            elif reason is not None:
                self.fallbacks.labels(_reason(reason)).inc()
                if dropped:
                    self.dropped.labels(_reason(reason)).inc()
            if latency_s is not None:
                self.cloud_latency.observe(latency_s)
            if sent_bytes is not None:
                self.sent_bytes.observe(sent_bytes)

    def fall_event(self) -> None:
        with self._lock:
            self.fall_events.inc()

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """watch: the queue depth, read at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def set_drift(self, alarm: bool, statistic: float) -> None:
        """The drift detector's state (runtime.drift DriftMonitor.state, after each clip): the
        alarm raised or clear, and its statistic."""
        self.drift_alarm.set(1 if alarm else 0)
        self.drift_statistic.set(float(statistic))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- helpers (under self._lock) -----------------------------------------------------------
    def _agree(self, kind: str, edge_label: int, cloud_label: int) -> None:
        result = "agree" if edge_label == cloud_label else "disagree"
        self.agreement.labels(kind, result).inc()
        name = self.classes[edge_label] if 0 <= edge_label < len(self.classes) else "other"
        self.class_agreement.labels(kind, name if name in self._class_labels else "other",
                                    result).inc()

    def track_threshold(self, hybrid) -> None:
        """The gauge to the hybrid's threshold now (also before the first clip)."""
        self.threshold.set(current_threshold(hybrid))


def current_threshold(hybrid) -> float:
    """The threshold on the score the hybrid applies now: the operating point's, or, for an
    adaptive one, the controller's level mapped back from rank space to a score."""
    ctrl = getattr(hybrid, "controller", None)
    if ctrl is None:
        return float(hybrid.operating_point.threshold)
    if len(ctrl.knots) == 1:
        return float(ctrl.knots[0])
    return float(np.interp(ctrl.level, ctrl.levels, ctrl.knots))


LOOPBACK = ("127.0.0.1", "::1", "localhost")


class MetricsExporter:
    """`GET /metrics` of an EdgeMetrics on host:port, from a daemon thread
    (prometheus_client's WSGI server); port 0 takes any free one (`port` says which)."""

    def __init__(self, metrics: EdgeMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        from prometheus_client import start_http_server

        self.metrics, self.host = metrics, host
        try:
            self._server, self._thread = start_http_server(port, host,
                                                           registry=metrics.registry)
        except OSError as exc:
            raise EdgeSwitchError(f"cannot serve metrics on {host}:{port}: "
                                  f"{exc.strerror or exc} (is the port in use? "
                                  "--metrics-port 0 takes any free one)") from None
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
