"""The gateway's Prometheus metrics, in their own registry (several gateways in one test process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine around the accept target (p99 < 20 ms), so a quantile read from the buckets means something.
_LATENCY_BUCKETS = (0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accept_seconds = Histogram(
            "eco2_gateway_accept_seconds",
            "Time to answer POST /api/v1/scan, by status code",
            ["status"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.sink_seconds = Histogram(
            "eco2_gateway_sink_seconds",
            "Time K_SINK took to take eco2.scan.requested (the broker's durable write), by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
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
            "eco2.scan.requested sends to K_SINK, by path (submit, outbox) and outcome"
            " (ok, timeout, unreachable, rejected: all but ok leave the event in the outbox)",
            ["path", "outcome"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "eco2_gateway_outbox_depth",
            "Accepted scans whose eco2.scan.requested the broker has not taken yet (as of the last sweep)",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "eco2_gateway_rate_limited_total", "Submits refused by the per-user rate limit", registry=self.registry
        )
