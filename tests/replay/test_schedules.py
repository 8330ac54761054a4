"""PingSources: read from the manifests, their cron schedules, and the local runner's tick posting the event."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from cloudevents.http import CloudEvent, from_http

from eco2_tools.local.client import runner_session
from eco2_tools.local.dispatcher import Endpoint
from eco2_tools.local.schedules import EndpointSource, ping
from eco2_tools.manifests import MANIFEST_DIRS, ManifestError, Manifests
from eco2_tools.manifests.pingsource import PING_EVENT_TYPE, Cron, ping_sources
from tests.support import ROOT, free_port, http_server


def test_the_replay_pingsource_ticks_every_five_minutes() -> None:
    sources = ping_sources(Manifests.load(ROOT))
    replay = sources["replay"]
    assert replay.sink_service == "replay"
    after = datetime(2026, 1, 1, 12, 3, 30, tzinfo=UTC)
    assert replay.cron.next_after(after) == datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    assert replay.cron.next_after(datetime(2026, 1, 1, 12, 5, tzinfo=UTC)).minute == 10


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * *", datetime(2026, 1, 1, 3, 0, tzinfo=UTC), datetime(2026, 1, 2, 3, 0, tzinfo=UTC)),
        ("15,45 * * * *", datetime(2026, 1, 1, 3, 20, tzinfo=UTC), datetime(2026, 1, 1, 3, 45, tzinfo=UTC)),
        ("0 0 * * 1", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)),  # the next Monday
        ("0 9-17/4 * * *", datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 13, tzinfo=UTC)),
        # Both day fields restricted: the 15th or any Monday, as cron reads it.
        ("0 0 15 * 1", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)),
    ],
)
def test_cron_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert Cron.parse(expression).next_after(after) == expected


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"])
def test_a_bad_schedule_fails_the_manifest_load(tmp_path: Path, bad: str) -> None:
    for directory in MANIFEST_DIRS:
        shutil.copytree(ROOT / directory, tmp_path / directory)
    path = tmp_path / "eventing" / "pingsource.yaml"
    path.write_text(path.read_text().replace('schedule: "*/5 * * * *"', f'schedule: "{bad}"'))
    with pytest.raises(ManifestError, match="schedule"):
        ping_sources(Manifests.load(tmp_path))


def sink_at(base_url: str, released: list[str]) -> EndpointSource:
    """Endpoints that send every Service's event to `base_url`, noting each release of the endpoint."""

    async def endpoints(service: str) -> Endpoint:
        return Endpoint(f"{base_url}/", lambda: released.append(service))

    return endpoints


async def test_a_tick_posts_the_ping_event_to_the_sink_and_survives_a_down_sink() -> None:
    source = ping_sources(Manifests.load(ROOT))["replay"]
    received: list[CloudEvent] = []
    released: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(from_http(dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def down(service: str) -> Endpoint:
        raise RuntimeError("cannot start")

    async with http_server(handler) as url, runner_session() as http:
        assert await ping(source, sink_at(url, released), http) == 204
        assert await ping(source, down, http) == 0
    [event] = received
    assert (event["type"], event["source"]) == (PING_EVENT_TYPE, "/apis/v1/namespaces/eco2/pingsources/replay")
    assert event.data == {"task": "replay-dead-letters"}
    assert released == ["replay"]


async def test_a_sink_that_refuses_or_does_not_answer_is_a_missed_tick(caplog: pytest.LogCaptureFixture) -> None:
    source = ping_sources(Manifests.load(ROOT))["replay"]
    released: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async with http_server(refuse) as url, runner_session() as http:
        with caplog.at_level(logging.WARNING, logger="eco2_tools.local.schedules"):
            assert await ping(source, sink_at(url, released), http) == 503
            assert await ping(source, sink_at(f"http://127.0.0.1:{free_port()}", released), http) == 0  # no listener
    assert released == ["replay", "replay"], "the replica is released either way"
    logged = [(r.getMessage(), r.__dict__["fields"]) for r in caplog.records]
    assert [(message, fields.get("status"), fields.get("error")) for message, fields in logged] == [
        ("ping refused", 503, None),
        ("ping not delivered", None, "ClientConnectorError"),
    ]
