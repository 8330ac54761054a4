"""Eco² function pack: the common library every function imports."""

import os
import sys

# redis-py 8 imports OpenTelemetry's metrics API, and its metrics SDK, whenever they are installed (they are:
# eco2.tracing records spans with the SDK), only to offer OTel metrics of its own, which the pack does not use (it
# exposes Prometheus metrics). That costs every process ~0.1 s (the SDK) and ~10 ms and 0.3 MB (the API, which
# scans the installed packages' entry points) before its first event. Marking the modules absent sends redis-py
# down its "no OpenTelemetry" path. The SDK's tracing needs the metrics API, so it is left alone when spans will
# be exported; eco2.tracing.allow_sdk() lifts the mark for a process (a test) that installs a provider itself.
sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
if not any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
    sys.modules.setdefault("opentelemetry.metrics", None)  # type: ignore[arg-type]
