"""Eco² function pack: the common library every function imports."""

import sys

# redis-py 8 imports OpenTelemetry's metrics SDK whenever it is installed (it is: eco2.tracing records spans with
# the SDK), only to offer OTel metrics of its own, which the pack does not use (it exposes Prometheus metrics).
# That import costs every process ~0.1 s and several MB before its first event; marking the module absent makes
# redis-py take its "no OpenTelemetry SDK" path. Nothing in the pack imports it (tracing needs only sdk.trace).
sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
