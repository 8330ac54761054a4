"""The dead letters recorded in Redis, summarized for `eco2 status`: how many, for which function, why, newest first.

The dead-letter queues are drained into the streams `eco2.keys.dead_letters(domain)` (one per domain) at
once, so their depth says nothing; the streams do. Each entry has `attributes` (a JSON object: the CloudEvent's
attributes with knativeerrordest/-code/-data) and `data`; it may have `recorded_at` or `domain`. Entries are
read defensively: one that does not parse is counted as unreadable, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from eco2 import keys
from eco2.connections import sync_redis
from eco2.dead_letters import DOMAINS

READ_LIMIT = 1000  # the newest entries summarized; `total` is the whole stream
REASON_LENGTH = 80
UNREADABLE = "(unreadable entry)"


@dataclass(slots=True)
class LetterGroup:
    function: str
    reason: str
    count: int
    newest_at: float
    newest_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "reason": self.reason,
            "count": self.count,
            "newest_at": self.newest_at,
            "newest_event_id": self.newest_id,
        }


def read_dead_letters(redis_url: str, routes: list[dict[str, Any]], limit: int = READ_LIMIT) -> dict[str, Any]:
    """{"total", "summarized", "groups": [...newest first], "error"}; an unreachable Redis is an error, not a crash."""
    client = sync_redis(redis_url, socket_timeout=2, socket_connect_timeout=2)
    entries: list[tuple[str, dict[str, str]]] = []
    try:
        total = sum(int(client.xlen(keys.dead_letters(domain))) for domain in DOMAINS)
        for domain in DOMAINS:
            entries += cast(
                list[tuple[str, dict[str, str]]], client.xrevrange(keys.dead_letters(domain), count=limit) or []
            )
    except redis.RedisError as exc:
        return {"total": None, "summarized": 0, "groups": [], "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        client.close()
    entries = sorted(entries, key=lambda entry: _recorded_at(*entry), reverse=True)[:limit]
    groups = summarize(entries, routes)
    return {"total": total, "summarized": len(entries), "groups": [g.as_json() for g in groups], "error": None}


def summarize(entries: Iterable[tuple[str, Mapping[str, str]]], routes: list[dict[str, Any]]) -> list[LetterGroup]:
    """Count entries by (function, reason); the group with the newest letter first."""
    groups: dict[tuple[str, str], LetterGroup] = {}
    for entry_id, fields in entries:
        attributes = _attributes(fields)
        key = (function_of(attributes, routes), reason_of(attributes)) if attributes else (UNREADABLE, UNREADABLE)
        at = _recorded_at(entry_id, fields)
        group = groups.get(key)
        if group is None:
            groups[key] = LetterGroup(key[0], key[1], 1, at, str(attributes.get("id", "")))
            continue
        group.count += 1
        if at > group.newest_at:
            group.newest_at, group.newest_id = at, str(attributes.get("id", ""))
    return sorted(groups.values(), key=lambda g: g.newest_at, reverse=True)


def function_of(attributes: Mapping[str, Any], routes: list[dict[str, Any]]) -> str:
    """The function whose Trigger matches the event's attributes (as the broker routed it), else its type."""
    for route in routes:
        wanted = route.get("filter")
        if isinstance(wanted, dict) and all(str(attributes.get(k)) == str(v) for k, v in wanted.items()):
            return str(route.get("function", "?"))
    return f"(type {attributes.get('type', '?')})"


def reason_of(attributes: Mapping[str, Any]) -> str:
    code = str(attributes.get("knativeerrorcode", "")).strip()
    data = " ".join(str(attributes.get("knativeerrordata", "")).split())
    if code and code != "0":
        detail = _error_code(data)
        return f"HTTP {code}" + (f" {detail}" if detail else "")
    return (data or "no response")[:REASON_LENGTH]


def _error_code(data: str) -> str:
    """The `error` code of an error body {"error": code, "message": ...}, when the data is one."""
    try:
        body = json.loads(data)
    except ValueError:
        return ""
    return str(body.get("error", ""))[:40] if isinstance(body, dict) else ""


def _attributes(fields: Mapping[str, str]) -> dict[str, Any]:
    try:
        attributes = json.loads(fields.get("attributes", ""))
    except (TypeError, ValueError):
        return {}
    return attributes if isinstance(attributes, dict) else {}


def _recorded_at(entry_id: str, fields: Mapping[str, str]) -> float:
    try:
        return float(fields["recorded_at"])
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return int(str(entry_id).split("-", 1)[0]) / 1000
    except ValueError:
        return 0.0
