"""eco2.tracing without a provider (nothing of OpenTelemetry loaded, the traceparent passed on), and with the OTLP
exporter of `configure_tracing` sending a span to a collector (a real HTTP server standing in for one)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eco2 import tracing

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_a_provider_the_incoming_traceparent_passes_on_unchanged() -> None:
    assert not tracing.recording()
    with tracing.span("rules eco2.scan.classified", VALID) as traced:
        assert traced.traceparent == VALID
        traced.outcome("replied")
    with tracing.child_span("model vision") as child:
        assert child is None


@pytest.mark.parametrize(
    "incoming",
    [None, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", VALID.upper(), VALID + "-x"],
)
def test_without_a_provider_a_missing_or_malformed_traceparent_starts_a_new_trace(incoming: str | None) -> None:
    with tracing.span("vision eco2.scan.requested", incoming) as traced:
        assert tracing.TRACEPARENT.fullmatch(traced.traceparent)
        assert traced.traceparent != incoming


def run_python(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_stage_without_an_exporter_loads_no_tracing_code() -> None:
    # What a stage process imports to serve its first event, less the server: neither the OTel trace API nor
    # the metrics API and SDK that redis-py would otherwise pull in (eco2/__init__.py says why).
    loaded = run_python(
        "import sys, eco2.stages, eco2.serving\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.') and sys.modules[m] is not None))",
        OTEL_EXPORTER_OTLP_ENDPOINT="",
    )
    assert loaded.strip() == "[]"


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []  # noqa: RUF012 - the server's one record, read by the test

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Collector.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_with_an_otlp_endpoint_spans_are_exported_to_the_collector(collector: str) -> None:
    printed = run_python(
        "import os\n"
        "from opentelemetry import trace\n"
        "from eco2 import tracing\n"
        "assert tracing.configure_tracing('vision', os.environ)\n"
        f"with tracing.span('vision eco2.scan.requested', {VALID!r}) as traced:\n"
        "    with tracing.child_span('model vision'):\n"
        "        pass\n"
        "print(traced.traceparent)\n"
        "trace.get_tracer_provider().shutdown()\n",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector,
    )
    traceparent = printed.strip()
    assert traceparent.split("-")[1] == VALID.split("-")[1]  # the same trace, a span of its own
    assert traceparent != VALID
    [(path, content_type, body)] = Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    for text in (b"vision eco2.scan.requested", b"model vision", b"service.name", b"vision"):
        assert text in body
    assert bytes.fromhex(VALID.split("-")[1]) in body
