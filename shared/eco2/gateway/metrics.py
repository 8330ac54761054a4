"""The gateway's Prometheus metrics (declared in eco2/metrics.json), in their own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from eco2.metric_catalog import MetricSet


class GatewayMetrics(MetricSet):
    set_name = "gateway"
    accept_seconds: Histogram
    sink_seconds: Histogram
    sink_sends: Counter
    outbox_depth: Gauge
    rate_limited: Counter
    sse_clients: Gauge
    sse_dropped: Counter
    reader_connections: Gauge
    watched_streams: Gauge
    submit_unreplicated: Counter
