"""The persist function's own metrics, on its /metrics beside the adapter's: how long each event waited for its
batch's commit, and how many events each batch carried."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

WAIT_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class PersistMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        wait = Histogram(
            "eco2_persist_commit_wait_seconds",
            "From an event joining a batch to that batch's commit (or failure)",
            ["function"],
            registry=registry,
            buckets=WAIT_BUCKETS,
        )
        rows = Histogram(
            "eco2_persist_batch_events",
            "Events per committed batch",
            ["function"],
            registry=registry,
            buckets=ROW_BUCKETS,
        )
        self.commit_wait = wait.labels("persist")
        self.batch_rows = rows.labels("persist")
