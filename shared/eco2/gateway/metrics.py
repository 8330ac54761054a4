"""The gateway's Prometheus metrics, in their own registry (several gateways in one test process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accept_seconds = Histogram(
            "eco2_gateway_accept_seconds",
            "Time to answer POST /api/v1/scan, by status code",
            ["status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.sse_clients = Gauge("eco2_gateway_sse_clients", "Open SSE streams", registry=self.registry)
        self.reader_connections = Gauge(
            "eco2_gateway_redis_reader_connections",
            "Redis connections reading job streams for SSE (one per process, whatever the client count)",
            registry=self.registry,
        )
        self.watched_streams = Gauge(
            "eco2_gateway_watched_streams", "Job streams the shared reader is watching", registry=self.registry
        )
        self.sse_dropped = Counter(
            "eco2_gateway_sse_dropped_total", "SSE clients dropped for reading too slowly", registry=self.registry
        )
        self.sink_sends = Counter(
            "eco2_gateway_sink_sends_total",
            "eco2.scan.requested sends to K_SINK, by outcome (ok, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "eco2_gateway_rate_limited_total", "Submits refused by the per-user rate limit", registry=self.registry
        )
