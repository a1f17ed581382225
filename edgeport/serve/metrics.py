"""Prometheus metrics of one server (prometheus-client, its own CollectorRegistry per app).

Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): `_total` for
counters, base units (seconds) in the name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """requests/errors per route and status, request latency, batch sizes and run time, queue depth."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("edgeport_requests_total", "HTTP requests answered", ["route", "code"], registry=r)
        self.errors = Counter("edgeport_request_errors_total", "HTTP requests answered with 4xx or 5xx",
                              ["route", "code"], registry=r)
        self.latency = Histogram("edgeport_request_latency_seconds", "Time from request to response",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgeport_batch_size_rows", "Rows per model run", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_time = Histogram("edgeport_batch_latency_seconds", "Time one model run took", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgeport_queue_depth_rows", "Rows waiting for a model run", ["model"], registry=r)

    def observe_request(self, route: str, code: int, seconds: float):
        self.requests.labels(route, str(code)).inc()
        if code >= 400:
            self.errors.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)

    def batch_hooks(self, model: str):
        """(on_batch(rows, seconds), on_depth(rows)) callbacks for a MicroBatcher."""
        size, took, depth = self.batch_size.labels(model), self.batch_time.labels(model), self.queue_depth.labels(model)

        def on_batch(rows, seconds):
            size.observe(rows)
            took.observe(seconds)

        return on_batch, depth.set

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
