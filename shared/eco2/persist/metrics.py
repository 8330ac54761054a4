"""The persist function's own metrics (declared in eco2/metrics.json), on its /metrics beside the adapter's: how
long each event waited for its batch's commit, and how many events each batch carried."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from eco2.metric_catalog import MetricSet


class PersistMetrics(MetricSet):
    set_name = "persist"
    commit_wait_seconds: Histogram
    batch_events: Histogram

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.commit_wait = self.commit_wait_seconds.labels("persist")
        self.batch_rows = self.batch_events.labels("persist")
