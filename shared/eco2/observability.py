"""JSON logs that carry the job id and trace id, and the Prometheus metrics every function process exposes."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("eco2_job_id", default=None)
_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("eco2_trace_id", default=None)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None when malformed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


@contextmanager
def log_context(job_id: str | None, traceparent: str | None) -> Iterator[None]:
    job_token = _job_id.set(job_id)
    trace_token = _trace_id.set(trace_id_of(traceparent))
    try:
        yield
    finally:
        _job_id.reset(job_token)
        _trace_id.reset(trace_token)


class JsonFormatter(logging.Formatter):
    def __init__(self, function_name: str) -> None:
        super().__init__()
        self._function = function_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "function": self._function,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id, trace_id = _job_id.get(), _trace_id.get()
        if job_id:
            entry["job_id"] = job_id
        if trace_id:
            entry["trace_id"] = trace_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(function_name: str, level: str) -> None:
    """Called once when a process starts (never at import), so tests and libraries keep their own logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(function_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class FunctionMetrics:
    """One registry per function object, so several functions (or tests) in one process never collide."""

    def __init__(self, function_name: str) -> None:
        self.registry = CollectorRegistry()
        self._function = function_name
        self.events = Counter(
            "eco2_events_total",
            "CloudEvents handled, by type and outcome (replied, no_reply, poison, transient, error)",
            ["function", "type", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "eco2_event_seconds",
            "Time to handle one CloudEvent",
            ["function", "type"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    def observe(self, event_type: str, outcome: str, started: float) -> None:
        self.events.labels(self._function, event_type, outcome).inc()
        self.seconds.labels(self._function, event_type).observe(time.perf_counter() - started)
