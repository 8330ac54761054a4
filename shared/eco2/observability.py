"""JSON logs that carry the job id, event id and trace id, and the Prometheus metrics every function exposes."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from eco2.metric_catalog import MetricSet

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("eco2_job_id", default=None)
_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("eco2_trace_id", default=None)
_IMPORTED = time.monotonic()
_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("eco2_event_id", default=None)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None when malformed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


@contextmanager
def log_context(job_id: str | None, traceparent: str | None, event_id: str | None = None) -> Iterator[None]:
    """Every log line written inside carries these ids (the job, the trace, the CloudEvent being handled)."""
    job_token = _job_id.set(job_id)
    trace_token = _trace_id.set(trace_id_of(traceparent))
    event_token = _event_id.set(event_id)
    try:
        yield
    finally:
        _job_id.reset(job_token)
        _trace_id.reset(trace_token)
        _event_id.reset(event_token)


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
        job_id, event_id, trace_id = _job_id.get(), _event_id.get(), _trace_id.get()
        if job_id:
            entry["job_id"] = job_id
        if event_id:
            entry["event_id"] = event_id
        if trace_id:
            entry["trace_id"] = trace_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# HTTP clients that log a line at INFO for every request they send: the openai SDK's httpx2 (each model call), httpx
# (replay's and `eco2 dlq`'s sends to the ingress). A process's own lines already say what became of each event,
# and its metrics time every call by outcome.
# Warnings still show.
CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore")


def configure_logging(function_name: str, level: str) -> None:
    """Called once when a process starts (never at import), so tests and libraries keep their own logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(function_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)


class FunctionMetrics(MetricSet):
    """What every function exposes (declared in eco2/metrics.json), in a registry of its own per function object."""

    set_name = "function"
    events: Counter
    event_seconds: Histogram
    emitted: Counter
    model_seconds: Histogram
    model_errors: Counter
    cold_starts: Counter
    cold_start_seconds: Gauge
    capacity_wait_seconds: Histogram
    capacity_slots: Gauge
    provider_refusals: Counter

    def __init__(self, function_name: str) -> None:
        super().__init__()
        self._function = function_name

    def observe(self, event_type: str, outcome: str, started: float) -> None:
        self.events.labels(self._function, event_type, outcome).inc()
        self.event_seconds.labels(self._function, event_type).observe(time.perf_counter() - started)

    def emit(self, event_type: str) -> None:
        self.emitted.labels(self._function, event_type).inc()

    def model_call(self, call: str, error: str | None, started: float) -> None:
        """One model call: its time by outcome (ok, or the error code), and the error counted apart."""
        self.model_seconds.labels(self._function, call, error or "ok").observe(time.perf_counter() - started)
        if error is not None:
            self.model_errors.labels(self._function, call, error).inc()

    def capacity_waited(self, model: str, seconds: float) -> None:
        self.capacity_wait_seconds.labels(self._function, model).observe(seconds)

    def slots_changed(self, model: str, delta: int) -> None:
        self.capacity_slots.labels(self._function, model).inc(delta)

    def provider_refused(self, model: str) -> None:
        self.provider_refusals.labels(self._function, model).inc()

    def started(self) -> None:
        """The process built its resources: one cold start, timed from the process's own start."""
        self.cold_starts.labels(self._function).inc()
        self.cold_start_seconds.labels(self._function).set(seconds_since_process_start())


def seconds_since_process_start() -> float:
    """Wall time since this process was created (Linux: /proc), else since this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as stat, open("/proc/uptime", "rb") as uptime:
            # Field 22 is the start time in clock ticks after boot; the command name (field 2) may hold spaces.
            started_ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
            booted_seconds = float(uptime.read().split()[0])
        return max(0.0, booted_seconds - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED
