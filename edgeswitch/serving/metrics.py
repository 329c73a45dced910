"""Prometheus metrics of the cloud server, in a registry of their own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from edgeswitch.serving.overload import SHED_REASONS

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edgeswitch_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("edgeswitch_request_latency_seconds",
                                 "Time from request to response", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("edgeswitch_batch_size", "Clips per model run",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.clips = Counter("edgeswitch_clips", "Clips classified", registry=self.registry)
        self.errors = Counter("edgeswitch_errors", "Failed requests by kind", ["kind"],
                              registry=self.registry)
        # device names come from the token file, at most
        # serving.middleware's MAX_DEVICE_LABELS (then "other")
        self.device_requests = Counter("edgeswitch_device_requests",
                                       "Requests by authenticated device and status class",
                                       ["device", "status"], registry=self.registry)
        # reason: one of serving.overload.SHED_REASONS (bounded)
        self.shed = Counter("edgeswitch_shed", "Model requests shed instead of run, by reason "
                            "(queue_requests, queue_clips, deadline, disconnected)", ["reason"],
                            registry=self.registry)
        for reason in SHED_REASONS:  # every reason shows, 0 until it happens
            self.shed.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
