"""The pieces of `eco2 status` and the dispatcher's pauses that need no running pack: the dead-letter summary,
the freshness report of a state file, the growing pause, the extensions of a letter RabbitMQ dead-lettered."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from eco2_tools.local.control import health
from eco2_tools.local.dead_letter_report import reason_of, summarize
from eco2_tools.local.deadletters import broker_error_extensions
from eco2_tools.local.dispatcher import Backoff
from eco2_tools.local.health import redis_problem
from tests.support import free_port

ROUTES: list[dict[str, Any]] = [
    {"function": "vision", "filter": {"type": "eco2.scan.requested", "priority": "normal"}},
    {"function": "vision-vip", "filter": {"type": "eco2.scan.requested", "priority": "high"}},
]


def entry(ms: int, **attributes: str) -> tuple[str, dict[str, str]]:
    return f"{ms}-0", {"attributes": json.dumps(attributes), "data": "{}"}


def test_dead_letters_are_counted_by_function_and_reason_newest_group_first() -> None:
    entries = [
        entry(3000, id="c", type="eco2.scan.requested", priority="high", knativeerrorcode="503"),
        entry(2000, id="b", type="eco2.scan.requested", priority="normal", knativeerrorcode="422"),
        entry(1000, id="a", type="eco2.scan.requested", priority="normal", knativeerrorcode="422"),
        ("500-0", {"attributes": "not json"}),
        entry(400, id="x", type="eco2.other", knativeerrorcode="0", knativeerrordata="timeout"),
    ]
    groups = [(g.function, g.reason, g.count, g.newest_id) for g in summarize(entries, ROUTES)]
    assert groups == [
        ("vision-vip", "HTTP 503", 1, "c"),
        ("vision", "HTTP 422", 2, "b"),
        ("(unreadable entry)", "(unreadable entry)", 1, ""),
        ("(type eco2.other)", "timeout", 1, "x"),
    ]


def test_a_recorded_at_field_wins_over_the_entry_id() -> None:
    old_id_new_time = ("1-0", {**entry(1, id="late")[1], "recorded_at": "5000"})
    groups = summarize([entry(2000, id="early", type="t"), old_id_new_time], [])
    assert groups[0].newest_id == "late"
    assert groups[0].newest_at == 5000.0


def test_the_reason_names_the_error_code_of_an_error_body() -> None:
    body = json.dumps({"error": "invalid_data", "message": "poison"})
    assert reason_of({"knativeerrorcode": "422", "knativeerrordata": body}) == "HTTP 422 invalid_data"
    assert reason_of({"knativeerrorcode": "0", "knativeerrordata": "transport error: ConnectError"}) == (
        "transport error: ConnectError"
    )
    assert reason_of({}) == "no response"


def test_a_stale_state_or_an_unreachable_broker_is_not_healthy() -> None:
    now = time.time()
    probe = {"reachable": True, "checked_at": now - 1, "error": None}
    fresh = {
        "updated_at": now - 1,
        "broker_health": probe,
        "redis_health": probe,
        "queues_read": {"ok": True, "read_at": now - 1},
    }
    assert health(fresh, now)["healthy"] is True
    stale = health({**fresh, "updated_at": now - 17}, now)
    assert stale["healthy"] is False
    assert stale["state_age_seconds"] == 17.0
    down = {"reachable": False, "checked_at": now - 1, "error": "the connection to RabbitMQ is down"}
    outage = health({**fresh, "broker_health": down, "queues_read": {"ok": False, "read_at": now - 20}}, now)
    assert outage["healthy"] is False
    assert outage["broker"]["error"] == "the connection to RabbitMQ is down"
    assert outage["queues_read"] == {"ok": False, "age_seconds": 20.0, "error": None}
    alarm = health({**fresh, "broker_health": {**probe, "blocked": True}}, now)
    assert alarm["healthy"] is False  # reachable, but RabbitMQ's memory or disk alarm blocks every publish
    assert alarm["broker"]["blocked"] is True
    older_runner = health({"updated_at": now}, now)
    assert older_runner["broker"] == {
        "reachable": False,
        "blocked": False,
        "checked_age_seconds": None,
        "error": "not reported by this runner",
    }


def test_the_pause_doubles_up_to_its_longest_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.5, longest=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_a_letter_rabbitmq_dead_lettered_gets_the_error_extensions() -> None:
    death = {"reason": "delivery_limit", "queue": "eco2.eco2.trigger.vision.v2", "count": 1}
    extra = broker_error_extensions({"id": "e1", "x-death": [death]}, "vision")
    assert extra["ce-knativeerrorcode"] == "0"
    assert extra["ce-knativeerrordest"] == "service:vision"
    assert "delivery_limit" in extra["ce-knativeerrordata"]
    assert "eco2.eco2.trigger.vision.v2" in extra["ce-knativeerrordata"]
    ours = {"knativeerrorcode": "503", "x-death": [death]}
    assert broker_error_extensions(ours, "vision") == {}
    assert broker_error_extensions({"id": "e2"}, "vision") == {}


async def test_an_unreachable_redis_is_reported_not_raised() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        problem = await redis_problem(client, timeout=2)
    finally:
        await client.aclose()
    assert problem is not None
    assert "unreachable" in problem or "did not answer" in problem


def test_status_lists_only_the_queues_holding_messages(capsys: Any) -> None:
    from eco2_tools.local import control

    depths = {f"eco2.trigger.vision-shard-{n}.v2": 0 for n in range(10)}
    control.print_queue_depths(depths)
    assert "queues: 10, all empty" in capsys.readouterr().out
    control.print_queue_depths(depths | {"eco2.trigger.rules.v2": 4, "eco2.trigger.rules.dlq": 2})
    out = capsys.readouterr().out
    assert "eco2.trigger.rules.v2" in out
    assert "eco2.trigger.rules.dlq" in out
    assert "dead letters" in out
    assert "vision-shard" not in out
    assert "the other 10 queues are empty" in out
