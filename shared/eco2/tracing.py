"""W3C trace context through the pack: one OpenTelemetry span per handled event, its traceparent on the reply.

A scan is one trace: the gateway starts it (or continues the caller's `traceparent` header) and puts it on
eco2.scan.requested as the CloudEvent `traceparent` extension; every stage's span is a child of the event's
traceparent, the model call a child of that, and the stage's reply carries the stage's own span. Spans are
recorded only when a TracerProvider is installed: `configure_tracing` installs one that exports over OTLP/HTTP
when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set, tests install their own. Otherwise nothing of
OpenTelemetry is even imported: the incoming traceparent passes on unchanged (a fresh one where there is none
or it is malformed), so the logs still carry one trace id per scan at no cost per event.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger("eco2.tracing")
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_tracer: Tracer | None = None
_exporting: SdkTracerProvider | None = None  # the provider configure_tracing installed, flushed at shutdown


def new_traceparent() -> str:
    """A fresh W3C trace context: version 00, random trace and span ids, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def configure_tracing(service_name: str, env: Mapping[str, str]) -> bool:
    """Once per process at start: export spans over OTLP/HTTP when an endpoint is configured; True if so.

    The exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout).
    """
    if _tracer is not None or not any(env.get(name) for name in ENDPOINT_VARIABLES):
        return _tracer is not None
    allow_sdk()
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use_provider(provider)
    global _exporting
    _exporting = provider
    log.info("exporting traces over OTLP", extra={"fields": {"service": service_name}})
    return True


def allow_sdk() -> None:
    """Lift eco2/__init__'s "absent" mark from OpenTelemetry's metrics API, which the tracing SDK imports."""
    if "opentelemetry.metrics" in sys.modules and sys.modules["opentelemetry.metrics"] is None:
        del sys.modules["opentelemetry.metrics"]


def shutdown_tracing() -> None:
    """At process exit: export the spans still buffered (bounded by the exporter's own timeout)."""
    if _exporting is not None:
        _exporting.shutdown()


def use_provider(provider: TracerProvider | None) -> None:
    """Record spans with `provider` (None: stop recording); tests install one with an in-memory exporter."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("eco2")


def recording() -> bool:
    return _tracer is not None


class Traced:
    """The span of one unit of work: the traceparent to put on what it sends on, and its outcome."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, traceparent: str, span: Span | None = None) -> None:
        self.traceparent = traceparent
        self._span = span

    def outcome(self, outcome: str, *, failed: bool = False) -> None:
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("eco2.outcome", outcome)
        if failed:
            self._span.set_status(Status(StatusCode.ERROR, outcome))


@contextmanager
def span(
    name: str,
    traceparent: str | None,
    *,
    event: CloudEvent | None = None,
    kind: str = "consumer",
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Traced]:
    """A span for one event (or request), child of `traceparent`; current while the block runs."""
    valid = traceparent if traceparent is not None and TRACEPARENT.fullmatch(traceparent) else None
    if _tracer is None:
        yield Traced(valid or new_traceparent())
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": valid}) if valid else None
    described = dict(attributes or {})
    if event is not None:
        # The CloudEvents semantic conventions of OpenTelemetry.
        for attribute in ("id", "type", "source", "subject"):
            value = event.get(attribute)
            if value:
                described[f"cloudevents.event_{attribute}"] = str(value)
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind[kind.upper()], attributes=described, record_exception=False
    ) as current:
        yield Traced(_traceparent_of(current), current)


@contextmanager
def child_span(name: str, **attributes: Any) -> Iterator[Traced | None]:
    """A span inside the current one (a model call inside a stage's event); nothing when not recording."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as current:
        yield Traced(_traceparent_of(current), current)


def _traceparent_of(current: Span) -> str:
    context = current.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
