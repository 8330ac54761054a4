"""What the stand-in counts: calls by kind and by job for tests, Prometheus metrics for benchmarks."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from eco2.metric_catalog import MetricSet

KINDS = ("vision", "answer", "other")
# A long benchmark sends many job ids; past this many the per-job table stops growing (calls still count).
MAX_TRACKED_JOBS = 100_000


class CallStats:
    """Every chat completion request received, failed ones included."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.by_job: dict[str, dict[str, int]] = {}
        self.faults_injected = 0
        self.rate_limited = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def record_call(self, kind: str, job_id: str | None) -> None:
        self.calls[kind] += 1
        if job_id is None or kind not in ("vision", "answer"):
            return
        job = self.by_job.get(job_id)
        if job is None:
            if len(self.by_job) >= MAX_TRACKED_JOBS:
                return
            job = self.by_job[job_id] = {}
        # Sparse: a job shows only the kinds it called, so a test can compare with {"vision": 3}.
        job[kind] = job.get(kind, 0) + 1

    def record_fault(self) -> None:
        self.faults_injected += 1

    def record_rate_limited(self) -> None:
        """A 429 from the provider limits (injected 429s count as faults instead)."""
        self.rate_limited += 1

    def enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def clear(self) -> None:
        self.calls = dict.fromkeys(KINDS, 0)
        self.by_job = {}
        self.faults_injected = 0
        self.rate_limited = 0
        # Calls still being answered keep counting; the peak restarts from them.
        self.peak_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "by_job": {job: dict(counts) for job, counts in self.by_job.items()},
            "faults_injected": self.faults_injected,
            "rate_limited": self.rate_limited,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


class StandinMetrics(MetricSet):
    """One registry per app (declared in eco2/metrics.json), so several stand-ins in one process never collide."""

    set_name = "standin"
    requests: Counter
    faults: Counter
    seconds: Histogram
