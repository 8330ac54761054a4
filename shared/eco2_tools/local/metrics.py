"""Prometheus metrics of the local runner (declared in eco2/metrics.json): deliveries, hop latency, cold starts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from eco2.metric_catalog import MetricSet


class RunnerMetrics(MetricSet):
    set_name = "runner"
    deliveries: Counter
    hop_seconds: Histogram
    ingress: Counter
    cold_starts: Counter
    cold_start_seconds: Histogram
    replicas: Gauge
    edge_checks: Counter

    def cold_start(self, function: str, seconds: float) -> None:
        self.cold_starts.labels(function).inc()
        self.cold_start_seconds.labels(function).observe(seconds)
