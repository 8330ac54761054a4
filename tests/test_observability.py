"""One scan through the gateway and every stage, in process on real Redis and the stand-in model: one trace id on
every log line, the spans one trace (gateway → vision → rules → answer → reward → persist, each the child of the
one before, the model calls children of their stage), and each function's /metrics counting exactly that scan."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from eco2 import tracing
from eco2.adapter import ServedFunction
from eco2.metric_catalog import catalog, metric_names
from eco2.observability import JsonFormatter
from eco2.serving import load_function
from tests.gateway.conftest import gateway_env
from tests.gateway.support import RecordingSink, bearer
from tests.support import REDIS_TEST_URL, exposition, wait_for

CHAIN = ("vision", "rules", "answer", "reward", "persist")
# A caller's own trace context: the gateway continues it rather than starting a new trace.
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BACKGROUND_LOGGERS = ("eco2.cachesync", "aiormq", "aio_pika")
TEST_CLIENT_REQUESTS = tuple(f"HTTP Request: {m} http://{n}/" for m in ("GET", "POST") for n in ("gateway", *CHAIN))


@dataclass
class Pack:
    gateway: httpx.AsyncClient
    stages: dict[str, httpx.AsyncClient]
    sink: RecordingSink
    spans: InMemorySpanExporter
    log: io.StringIO
    standin_url: str
    # Every function by name: what its metrics port serves is read from it (tests.support.exposition).
    functions: dict[str, ServedFunction]

    def log_lines(self, since: int = 0) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue()[since:].splitlines()]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line as the pack writes it (JSON, with the ids of the context it was written in)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("tests"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def pack(
    redis_client: Any,
    standin_url: str,
    spans: InMemorySpanExporter,
    json_log: io.StringIO,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pack]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/rewards.sqlite3")  # persist reads its own env
    sink = RecordingSink()
    sink.start()
    stage_env = {
        "REDIS_URL": REDIS_TEST_URL,
        "OPENAI_BASE_URL": f"{standin_url}/v1",
        "ECO2_IMAGE_URL_ALLOWLIST": standin_url,
    }
    started: dict[str, ServedFunction] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for name in ("gateway", *CHAIN):
            app, function = load_function(name)
            await function.start(
                gateway_env(sink.url, ECO2_IMAGE_URL_ALLOWLIST=standin_url) if name == "gateway" else stage_env
            )
            started[name] = function
            clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
        for name, client in clients.items():
            # Ready (reward: its catalog sync warmed up), so no start-up line lands among the scan's.
            await wait_for(partial(ready, client), timeout=20, what=f"{name} ready")
        yield Pack(clients.pop("gateway"), clients, sink, spans, json_log, standin_url, started)
    finally:
        for client in clients.values():
            await client.aclose()
        for function in started.values():
            await function.stop()
        sink.stop()


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def run_scan(pack: Pack) -> tuple[str, list[CloudEvent]]:
    """Submit one scan with the caller's traceparent, then deliver each event to the next stage as the broker
    would (the reply of one is the delivery of the next); the job id and every event sent on."""
    image = f"{pack.standin_url}/samples/clear_pet_bottle.png"
    accepted = await pack.gateway.post(
        "/api/v1/scan", json={"image_url": image}, headers={**bearer("trace-user"), "traceparent": CALLER}
    )
    assert accepted.status_code == 202, accepted.text
    [received] = pack.sink.events()
    events = [received.event]
    for name in CHAIN:
        headers, body = to_binary(events[-1])
        answered = await pack.stages[name].post("/", headers=headers, content=body)
        assert answered.status_code in (200, 202), (name, answered.text)
        if answered.status_code == 200:
            events.append(from_http(dict(answered.headers), answered.content))
    return str(accepted.json()["job_id"]), events


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    """Spans by function ("vision eco2.scan.requested" → vision), model calls by their own name."""
    return {span.name if span.name.startswith("model ") else span.name.split(" ")[0]: span for span in finished}


async def test_one_scan_is_one_trace_on_every_log_line_and_every_span(pack: Pack) -> None:
    scan_started = len(pack.log.getvalue())
    job_id, events = await run_scan(pack)
    trace_id = CALLER.split("-")[1]
    assert [e["type"] for e in events] == [
        "eco2.scan.requested",
        "eco2.scan.classified",
        "eco2.scan.ruled",
        "eco2.scan.answered",
        "eco2.reward.granted",
    ]
    # Each event carries the span of the function that sent it, in the caller's trace.
    assert all(str(e["traceparent"]).split("-")[1] == trace_id for e in events)
    assert len({e["traceparent"] for e in events}) == len(events)

    spans = by_name(pack.spans.get_finished_spans())
    assert set(spans) == {"gateway", *CHAIN, "model vision", "model answer"}
    assert {f"{s.context.trace_id:032x}" for s in spans.values()} == {trace_id}
    assert f"{parent_id(spans['gateway']):016x}" == CALLER.split("-")[2]
    for parent, child in zip(("gateway", *CHAIN), CHAIN, strict=False):
        assert parent_id(spans[child]) == spans[parent].context.span_id, f"{child} is not {parent}'s child"
    for stage in ("vision", "answer"):
        assert parent_id(spans[f"model {stage}"]) == spans[stage].context.span_id
    assert spans["reward"].attributes is not None
    assert spans["reward"].attributes["cloudevents.event_id"] == events[3]["id"]

    lines = pack.log_lines(since=scan_started)
    accepted = [line for line in lines if line["msg"] == "scan accepted"]
    handled = {line["type"]: line for line in lines if line["msg"] == "handled"}
    assert len(accepted) == 1
    assert (accepted[0]["trace_id"], accepted[0]["job_id"]) == (trace_id, job_id)
    assert set(handled) == {str(e["type"]) for e in events}
    for event in events:
        line = handled[str(event["type"])]
        assert (line["trace_id"], line["job_id"], line["event_id"]) == (trace_id, job_id, event["id"])
    # Every line the pack wrote while the scan ran carries its job and trace, whichever function wrote it (the
    # lines of the libraries it calls included). Not the scan's: this test's own requests, and reward's catalog
    # sync, a background task of the process whose AMQP client may log (a reconnect) whenever it likes.
    ours = [
        line
        for line in lines
        if not line["msg"].startswith(TEST_CLIENT_REQUESTS) and not line["logger"].startswith(BACKGROUND_LOGGERS)
    ]
    assert [line for line in ours if (line.get("job_id"), line.get("trace_id")) != (job_id, trace_id)] == []


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_metrics_endpoint_counts_the_scan_and_exposes_only_documented_metrics(pack: Pack) -> None:
    _, events = await run_scan(pack)
    documented = metric_names()
    scraped = {name: exposition(function) for name, function in pack.functions.items()}
    for client in (pack.gateway, *pack.stages.values()):
        assert (await client.get("/metrics")).status_code == 404, "metrics only on the metrics port"
    for name, text in scraped.items():
        exposed = {sample[0] for sample in scrape(text)}
        exposed = {n for n in exposed if not n.endswith("_created")}  # prometheus_client's own timestamps
        assert exposed <= documented, f"{name} exposes undocumented metrics: {sorted(exposed - documented)}"
        if name != "gateway":
            families = {family.name for family in text_string_to_metric_families(text)}
            every_function = {spec.name.removesuffix("_total") for spec in catalog()["function"].values()}
            assert every_function <= families, f"{name} lacks {sorted(every_function - families)}"

    gateway = scrape(scraped["gateway"])
    assert value(gateway, "eco2_gateway_accept_seconds_count", status="202") == 1
    assert value(gateway, "eco2_gateway_sink_sends_total", path="submit", outcome="ok") == 1
    for name, received, sent in zip(CHAIN, events, [*events[1:], None], strict=True):
        samples = scrape(scraped[name])
        outcome = "replied" if sent is not None else "no_reply"
        assert value(samples, "eco2_events_total", function=name, type=received["type"], outcome=outcome) == 1
        assert value(samples, "eco2_event_seconds_count", function=name, type=received["type"]) == 1
        assert value(samples, "eco2_cold_starts_total", function=name) == 1
        assert value(samples, "eco2_cold_start_seconds", function=name) > 0
        if sent is not None:
            assert value(samples, "eco2_events_emitted_total", function=name, type=sent["type"]) == 1
        calls = 1 if name in ("vision", "answer") else 0
        assert value(samples, "eco2_model_seconds_count", function=name, call=name, outcome="ok") == calls
    persist = scrape(scraped["persist"])
    assert value(persist, "eco2_persist_batch_events_count", function="persist") == 1
