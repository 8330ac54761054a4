"""PingSources: read from the manifests, their cron schedules, and the local runner's tick posting the event."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cloudevents.http import CloudEvent, from_http

from eco2.local.dispatcher import Endpoint
from eco2.local.schedules import ping
from eco2.manifests import MANIFEST_DIRS, ManifestError, Manifests
from eco2.manifests.pingsource import PING_EVENT_TYPE, Cron, ping_sources
from tests.support import ROOT


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


async def test_a_tick_posts_the_ping_event_to_the_sink_and_survives_a_down_sink() -> None:
    source = ping_sources(Manifests.load(ROOT))["replay"]
    received: list[CloudEvent] = []
    released: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(from_http(dict(request.headers), request.read()))
        return httpx.Response(204)

    async def endpoints(service: str) -> Endpoint:
        return Endpoint(f"http://{service}.test/", lambda: released.append(service))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        assert await ping(source, endpoints, http) == 204
    [event] = received
    assert (event["type"], event["source"]) == (PING_EVENT_TYPE, "/apis/v1/namespaces/eco2/pingsources/replay")
    assert event.data == {"task": "replay-dead-letters"}
    assert released == ["replay"]

    async def down(service: str) -> Endpoint:
        raise RuntimeError("cannot start")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        assert await ping(source, down, http) == 0
