"""Prometheus metrics of the local runner: deliveries, hop latency, cold starts, replicas."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)


class RunnerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "eco2_runner_deliveries_total",
            "Deliveries to subscribers by trigger and outcome (replied, acked, retried, dead_lettered, dropped)",
            ["trigger", "outcome"],
            registry=self.registry,
        )
        self.hop_seconds = Histogram(
            "eco2_runner_hop_seconds",
            "Published to the broker → taken by the trigger's dispatcher (before the HTTP delivery)",
            ["trigger"],
            registry=self.registry,
            buckets=_FAST,
        )
        self.ingress = Counter(
            "eco2_runner_ingress_total", "Events accepted by the ingress", ["outcome"], registry=self.registry
        )
        self.cold_starts = Counter(
            "eco2_runner_cold_starts_total",
            "Function processes started (each the manifest's command, a fresh interpreter)",
            ["function"],
            registry=self.registry,
        )
        self.cold_start_seconds = Histogram(
            "eco2_runner_cold_start_seconds",
            "Spawn → ready of a function process",
            ["function"],
            registry=self.registry,
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30),
        )
        self.replicas = Gauge(
            "eco2_runner_replicas", "Running function processes", ["function"], registry=self.registry
        )

    def cold_start(self, function: str, seconds: float) -> None:
        self.cold_starts.labels(function).inc()
        self.cold_start_seconds.labels(function).observe(seconds)
