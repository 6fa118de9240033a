"""Prometheus metrics of one app, in its own registry so that two apps in a process never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TRACE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ccapo_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "ccapo_request_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "ccapo_queue_seconds",
            "time a request's first trace waited in the queue",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_traces = Histogram(
            "ccapo_batch_traces", "traces per server batch", buckets=_TRACE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "ccapo_server_batch_tokens",
            "feed tokens per server batch (the engine splits each into forward passes of engine_batch_tokens)",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("ccapo_queue_traces", "traces waiting to be scored", registry=r)
        self.queue_tokens = Gauge("ccapo_queue_tokens", "feed tokens waiting to be scored", registry=r)
        self.requests_open = Gauge(
            "ccapo_requests_open", "scoring requests being prepared, queued or scored", registry=r
        )
        self.dropped_traces = Counter(
            "ccapo_dropped_traces",
            "traces whose request went away (deadline, client gone, shutdown) before they were scored, by where "
            "their work stopped: preparation, queue or engine",
            ["stage"],
            registry=r,
        )
        self.errors = Counter("ccapo_errors", "error answers by type", ["type"], registry=r)
        self.model_version = Gauge("ccapo_model_version", "version of the model in service (0: none yet)", registry=r)

    def count_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
