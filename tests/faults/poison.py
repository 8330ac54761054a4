"""The poison case: hypothesis-generated CloudEvents at every running function's port and at the ingress.

Every answer must be a 4xx or a 2xx (a generated event may happen to be acceptable), never a 5xx and never a
dropped connection (a crash). Each generated event the ingress accepts with a pack type whose body is not a
JSON object can only be refused by its stage: it must be dead-lettered exactly once, with a 4xx as its cause
(refused once, not retried until exhausted) — and never again, whatever runs after.

Forged events of valid shapes come too: from outside (no or a wrong sender credential: the ingress answers 401),
and from an insider holding the credential or reaching persist directly (final events naming no job, another
user's job, a character outside the catalog: persist refuses each, eco2.persist.evidence). After the run, the
users they name own nothing and have no history they did not earn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eco2 import keys
from eco2.dead_letters import DOMAINS
from eco2.events import FUNCTION_EVENTS, SHARDS, EventType
from eco2.gateway.tokens import DEV_JWT_SECRET, issue_token
from eco2.rewards import reward_id
from eco2.rules import CharacterCatalog
from tests.faults.pack import Pack
from tests.support import SENDER

EXAMPLES = 60
ROUTED = sorted({str(consumed) for consumed, _ in FUNCTION_EVENTS.values()})
LETTER_DEADLINE = 60.0
WARM_DEADLINE = 30.0
HEALTH_DEADLINE = 10.0

_header = st.text(alphabet=string.ascii_letters + string.digits + "-._/:", min_size=0, max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_scanlike = st.fixed_dictionaries(
    {"job_id": _header, "user_id": _header, "image_url": st.text(max_size=30)},
    optional={"classification": _json, "rule_id": _json, "final_answer": _json, "model": _json},
)
_events = st.fixed_dictionaries(
    {
        "type": st.one_of(st.sampled_from([*ROUTED, "eco2.reward.granted", "dev.knative.sources.ping"]), _header),
        "specversion": st.one_of(st.just("1.0"), st.just("1.0"), st.just("1.0"), _header),
        "source": _header,
        "subject": _header,
        "priority": st.sampled_from(["normal", "high"]),
        # Every event of the pack carries its shard (the model stages' Triggers take one each).
        "shard": st.sampled_from([str(n) for n in range(SHARDS)]),
        "body": st.one_of(_scanlike.map(json.dumps), _json.map(json.dumps), st.binary(max_size=60)),
    }
)


@dataclass
class PoisonRun:
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # Event ids the ingress took with a routed type and a body no stage can accept: each must be dead-lettered once.
    refused_ids: list[str] = field(default_factory=list)
    targets: set[str] = field(default_factory=set)

    def post(self, http: httpx.Client, url: str, where: str, event: dict[str, Any]) -> int:
        attributes = ("specversion", "type", "source", "subject", "priority", "shard")
        headers = {f"ce-{name}": str(event[name]) for name in attributes}
        headers |= {"ce-id": uuid.uuid4().hex, "content-type": "application/json"}
        body = event["body"] if isinstance(event["body"], bytes) else event["body"].encode()
        if where == "ingress":
            headers |= SENDER  # the pack's own credential: what the shapes do past the broker's door
        try:
            status = http.post(url, headers=headers, content=body).status_code
        except httpx.HTTPError as exc:
            self.problems.append(f"{where}: no answer ({type(exc).__name__}) to a poison event")
            return 0
        self.statuses[f"{where} {status // 100}xx"] += 1
        if status >= 500:
            self.problems.append(f"{where} answered {status} to a poison event")
        if where == "ingress" and status == 202 and event["type"] in ROUTED and not _an_object(event["body"]):
            self.refused_ids.append(headers["ce-id"])
        return status


def _an_object(body: str | bytes) -> bool:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        return isinstance(json.loads(body), dict)
    return False


def send_poison(pack: Pack, run: PoisonRun, examples: int = EXAMPLES) -> None:
    """Post `examples` generated events to the ingress and to every running function replica (not the gateway)."""
    targets = {"ingress": f"http://127.0.0.1:{pack.ingress_port}/"}
    for name, pool in pack.state().get("functions", {}).items():
        if name != "gateway" and pool.get("replicas"):
            url = str(pool["replicas"][0]["url"])
            if _serving(url, HEALTH_DEADLINE):  # listed while it starts: wait until it serves
                targets[name] = url
    run.targets = set(targets)

    # derandomize: the same examples every run, so a CI failure reproduces.
    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(_events)
    def each(event: dict[str, Any]) -> None:
        for where, url in targets.items():
            run.post(http, url, where, event)

    with httpx.Client(timeout=30) as http:
        each()
    for where, url in targets.items():
        if where != "ingress" and not _serving(url, HEALTH_DEADLINE):
            run.problems.append(f"{where} no longer serves after the poison events")


def _serving(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url.rstrip('/')}/healthz", timeout=2).status_code == 200:
                return True
        time.sleep(0.2)
    return False


async def poison_events(pack: Pack, stop: asyncio.Event) -> list[str]:
    """Send the generated events mid-run; after the scans ended, check each refused one was dead-lettered once.

    A second round goes out once the functions that scale from zero on their own traffic are up too (the
    dead-letter sink after the first refused letter, replay after its first PingSource tick).
    """
    await asyncio.sleep(3.0)  # the stages are up, scans in flight
    run = PoisonRun()
    await asyncio.to_thread(send_poison, pack, run)
    covered = set(run.targets)
    await _wait_running(pack, {"dead-letter", "replay"}, WARM_DEADLINE)
    await asyncio.to_thread(send_poison, pack, run)
    run.targets |= covered
    forged = await asyncio.to_thread(send_forged, pack, run)
    insider = await send_insider_forgeries(pack, run)
    await stop.wait()
    letters = await _letters_by_id(pack, set(run.refused_ids))
    for event_id in run.refused_ids:
        found = letters.get(event_id, [])
        if len(found) != 1 or not found[0].startswith("4"):
            run.problems.append(f"poison {event_id}: dead-lettered {len(found)} times, causes {found}")
    notes = [
        f"{sum(run.statuses.values())} poison posts to {', '.join(sorted(run.targets))}: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items())),
        f"{len(run.refused_ids)} refused through the broker, each dead-lettered once with a 4xx",
        f"{forged} forged events of valid shapes (no or a wrong sender credential): each answered 401",
        f"{len(insider.events)} forged final events of valid shapes with the credential, and "
        f"{insider.direct} straight to persist: each refused 422, dead-lettered once; no user's data changed",
    ]
    run.problems += await insider.audit(pack)
    return notes + [f"problem: {p}" for p in run.problems[:20]]


async def _wait_running(pack: Pack, names: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not names <= set(pack.function_pids().values()):
        await asyncio.sleep(0.5)


async def _letters_by_id(pack: Pack, wanted: set[str]) -> dict[str, list[str]]:
    """event id -> the knativeerrorcode of each of its recorded letters, once all wanted ones are in (or 60 s)."""
    redis = aioredis.from_url(pack.redis_url, decode_responses=True)
    deadline = time.monotonic() + LETTER_DEADLINE
    try:
        while True:
            found: dict[str, list[str]] = {}
            for domain in DOMAINS:
                entries = cast(list[Any], await redis.xrange(keys.dead_letters(domain)) or [])
                for _, fields in entries:
                    attributes = json.loads(fields["attributes"])
                    found.setdefault(attributes["id"], []).append(str(attributes.get("knativeerrorcode", "")))
            if wanted <= found.keys() or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


def send_forged(pack: Pack, run: PoisonRun) -> int:
    """Events a process that is not one of the pack's senders posts to the ingress: the shapes the pack's own
    events have (a reward granted to `bob`, a scan of an internal URL for `mallory`), with no credential, a wrong
    one, or another scheme. Each must be refused 401 before it reaches the broker."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "eco2.reward.granted",
            {
                "job_id": "forged-1",
                "user_id": "bob",
                "reward_id": "forged",
                "character": {"character_id": "forged-legendary", "name": "forged", "middle_category": "무색페트병"},
            },
        ),
        ("eco2.scan.requested", {"job_id": "forged-2", "user_id": "mallory", "image_url": "http://127.0.0.1:15672/"}),
    ]
    credentials: list[dict[str, str]] = [{}, {"Authorization": "Bearer forged-token"}, {"Authorization": "Basic eA=="}]
    url = f"http://127.0.0.1:{pack.ingress_port}/"
    sent = 0
    with httpx.Client(timeout=30) as http:
        for event_type, data in events:
            for credential in credentials:
                headers = {
                    "ce-specversion": "1.0",
                    "ce-type": event_type,
                    "ce-source": "/eco2/reward",
                    "ce-id": uuid.uuid4().hex,
                    "ce-subject": str(data["job_id"]),
                    "ce-shard": "0",
                    "content-type": "application/json",
                    **credential,
                }
                status = http.post(url, headers=headers, content=json.dumps(data).encode()).status_code
                sent += 1
                if status != 401:
                    run.problems.append(f"a forged {event_type} answered {status}, not 401")
    return sent


# The characters a forger names: one the catalog never had, one it has.
FORGED_CHARACTER = "forged-legendary"
CATALOG_CHARACTER = "char_peti"
FORGER = "bob"
DEFAULT_CHARACTER = CharacterCatalog.load().default().character_id
DONE_JOB_DEADLINE = 60.0


@dataclass
class InsiderForgeries:
    """Final events an insider forges with valid shapes, the users they name, and the job ids they invent."""

    victim: str
    events: list[tuple[str, dict[str, Any]]]
    invented_jobs: set[str]
    direct: int = 0

    async def audit(self, pack: Pack) -> list[str]:
        """What the users the forgeries named own and remember, read through the mobile API."""
        problems: list[str] = []
        async with httpx.AsyncClient(base_url=pack.gateway, timeout=10) as http:
            for user in (FORGER, "mallory"):
                characters, scans = await _user_data(http, user)
                # The default character is every user's on the first read of their collection (this one).
                characters = [c for c in characters if c["character_id"] != DEFAULT_CHARACTER]
                if characters or scans:
                    problems.append(f"forged final events gave {user} {len(characters)} characters, {len(scans)} scans")
            characters, scans = await _user_data(http, self.victim)
            if FORGED_CHARACTER in {c["character_id"] for c in characters}:
                problems.append(f"a forged grant gave {self.victim} {FORGED_CHARACTER}")
            if self.invented_jobs & {s["job_id"] for s in scans}:
                problems.append(f"a forged final event wrote an invented job into {self.victim}'s history")
        return problems


async def _user_data(http: httpx.AsyncClient, user: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    token = issue_token(user, DEV_JWT_SECRET, 600, None, issuer="eco2", audience="eco2")
    headers = {"Authorization": f"Bearer {token}"}
    characters = (await http.get("/api/v1/me/characters", headers=headers)).json()["characters"]
    scans = (await http.get("/api/v1/me/scans", params={"limit": "100"}, headers=headers)).json()["scans"]
    return characters, scans


def _final_event(event_type: EventType, user: str, job: str, character: str | None) -> tuple[str, dict[str, Any]]:
    """A final event's data exactly as the reward stage shapes it (eco2.events.RewardGranted, ScanCompleted)."""
    data: dict[str, Any] = {
        "job_id": job,
        "user_id": user,
        "category": "재활용폐기물",
        "middle_category": "무색페트병",
        "rule_id": "recyclable_clear_pet",
        "reward_reason": "granted" if event_type is EventType.REWARD_GRANTED else "not_recyclable",
        "completed_at": "2026-12-01T00:00:00+00:00",
    }
    if character is not None:
        data["reward_id"] = reward_id(user, character)
        data["character"] = {"character_id": character, "name": "forged", "middle_category": "무색페트병"}
    return str(event_type), data


async def _a_done_job(pack: Pack) -> tuple[str, str]:
    """(job id, user id) of a scan of the run that is done: the real job a forger names."""
    redis = aioredis.from_url(pack.redis_url, decode_responses=True)
    deadline = time.monotonic() + DONE_JOB_DEADLINE
    try:
        while True:
            async for name in redis.scan_iter(match=keys.job("*"), count=500):
                if str(name).count(":") != keys.job("x").count(":"):
                    continue  # a job's stream, checkpoints or lease, not its hash
                job = cast(dict[str, str], await redis.hgetall(name))
                if job.get("status") == "done" and job.get("user_id") and job.get("job_id"):
                    return job["job_id"], job["user_id"]
            if time.monotonic() > deadline:
                raise TimeoutError("no scan of the run was done to forge events against")
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


async def send_insider_forgeries(pack: Pack, run: PoisonRun) -> InsiderForgeries:
    """Final events of valid shapes from a holder of the sender credential (to the ingress) and from a pod that
    reaches persist itself: each must be refused as poison (the ingress's are dead-lettered once with a 4xx)."""
    job, victim = await _a_done_job(pack)
    invented = {f"forged-{uuid.uuid4().hex[:8]}" for _ in range(3)}
    none_1, none_2, none_3 = sorted(invented)
    granted, completed = EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED
    forgeries = InsiderForgeries(
        victim,
        [
            _final_event(granted, FORGER, none_1, FORGED_CHARACTER),  # no job, a character the catalog lacks
            _final_event(granted, FORGER, none_2, CATALOG_CHARACTER),  # no job
            _final_event(granted, FORGER, job, CATALOG_CHARACTER),  # another user's job
            _final_event(granted, victim, job, FORGED_CHARACTER),  # the user's own job, an invented character
            _final_event(completed, FORGER, job, None),  # another user's job, into the forger's history
            _final_event(completed, victim, none_3, None),  # an invented job, into the victim's history
            _final_event(completed, "mallory", none_3, None),
        ],
        invented,
    )
    persist = _replica_url(pack, "persist")
    async with httpx.AsyncClient(timeout=30) as http:
        for event_type, data in forgeries.events:
            headers = {
                "ce-specversion": "1.0",
                "ce-type": event_type,
                "ce-source": "/eco2/reward",
                "ce-subject": str(data["job_id"]),
                "ce-shard": "0",
                "content-type": "application/json",
            }
            body = json.dumps(data).encode()
            event_id = uuid.uuid4().hex
            status = await http.post(pack_ingress(pack), headers=headers | SENDER | {"ce-id": event_id}, content=body)
            if status.status_code != 202:
                run.problems.append(f"the ingress answered {status.status_code} to an insider's {event_type}")
            else:
                run.refused_ids.append(event_id)
            if persist is not None:
                direct = await http.post(persist, headers=headers | {"ce-id": uuid.uuid4().hex}, content=body)
                forgeries.direct += 1
                if direct.status_code != 422:
                    run.problems.append(f"persist answered {direct.status_code} to a forged {event_type}, not 422")
    return forgeries


def pack_ingress(pack: Pack) -> str:
    return f"http://127.0.0.1:{pack.ingress_port}/"


def _replica_url(pack: Pack, name: str) -> str | None:
    replicas = pack.state().get("functions", {}).get(name, {}).get("replicas") or []
    return str(replicas[0]["url"]) if replicas else None
