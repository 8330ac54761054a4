"""The dead-letter sink: records a failed event for replay and, when it was its job's live work, fails the job.

A letter is recorded exactly once (the dedupe mark and the stream entry are written in one script, so a Redis
error in between can neither lose the record nor mark it recorded). It fails a job only when the event is
that job's live work: the pack's own event id for (job, type), and the job still waiting at the stage that
emitted it. Anything else (a curl'd event naming a healthy job, an unknown job id) is recorded and the job
left alone; unknown ids never create jobs. A letter of a finished job's final event keeps that job's hash as long
as the letter, so its replay is still backed when persist checks it (eco2.dead_letters.keep_job_for_replay).

One sink, a queue per domain: the domain is the work that failed, read off the event type (DOMAIN_OF_TYPE),
and each domain has its own record stream (`eco2.keys.dead_letters(domain)`) and its own series of the
`eco2_dead_letters_total` counter, so `eco2 dlq --domain reward` and an alert on rewards see only rewards.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from cloudevents.http import CloudEvent
from prometheus_client import Counter

from eco2 import keys, lua
from eco2.adapter import EventFunction
from eco2.dead_letters import (
    DEAD_LETTER_MAXLEN,
    DEAD_LETTER_TTL_SECONDS,
    ERROR_EXTENSIONS,
    domain_of,
    fail_job,
    keep_job_for_replay,
    live_job,
    seen_key,
)
from eco2.errors import store_call
from eco2.jobs import JobStore, TransitionOutcome
from eco2.metric_catalog import MetricSet
from eco2.settings import Settings

log = logging.getLogger("eco2.functions.dead_letter")


@dataclass(slots=True)
class DeadLetterContext:
    store: JobStore
    recorded: Counter | None = None  # eco2_dead_letters_total{domain, outcome}

    @classmethod
    async def create(cls, settings: Settings) -> DeadLetterContext:
        store = JobStore.from_url(
            settings.redis_url, ttl_seconds=settings.job_ttl_seconds, connections=settings.connections
        )
        return cls(store)

    async def aclose(self) -> None:
        await self.store.aclose()

    async def ready(self) -> bool:
        return await self.store.ping()


async def record(event: CloudEvent, ctx: DeadLetterContext) -> CloudEvent | None:
    attributes = {k: str(v) for k, v in event.get_attributes().items()}
    data = event.get_data()
    domain = domain_of(attributes["type"])
    recorded = await _record_once(ctx.store, domain, attributes, data)
    if recorded:
        log.warning(
            "dead letter recorded",
            extra={
                "fields": {"domain": domain, "type": attributes["type"], "id": attributes["id"], **_errors(attributes)}
            },
        )
    if ctx.recorded is not None:
        ctx.recorded.labels(domain, "recorded" if recorded else "repeat").inc()
    await _fail_live_job(attributes, data, ctx.store)
    await keep_job_for_replay(ctx.store, attributes, data)
    return None


async def _record_once(store: JobStore, domain: str, attributes: dict[str, str], data: object) -> bool:
    seen = seen_key(attributes)
    script = lua.register(store.redis, "dead_letter_record")
    args = [
        str(DEAD_LETTER_TTL_SECONDS),
        json.dumps(attributes, ensure_ascii=False),
        json.dumps(data, ensure_ascii=False, default=str),
        str(DEAD_LETTER_MAXLEN),
        f"{time.time():.3f}",
    ]
    return bool(await store_call(script(keys=[seen, keys.dead_letters(domain)], args=args)))


async def _fail_live_job(attributes: dict[str, str], data: object, store: JobStore) -> None:
    job_id = live_job(attributes)
    if job_id is None:
        return  # not the pack's own event for that job: recorded, the job is left alone
    user_id = str(data.get("user_id", "")) if isinstance(data, dict) else ""
    failed = await fail_job(store, job_id, user_id, attributes["type"], attributes.get("knativeerrorcode", ""))
    if failed.outcome is not TransitionOutcome.APPLIED:
        log.info("dead letter left its job alone", extra={"fields": {"outcome": failed.outcome.value}})


class DeadLetterMetrics(MetricSet):
    set_name = "dead_letter"
    letters: Counter


def function() -> EventFunction[DeadLetterContext]:
    """The dead-letter sink as functions/dead-letter serves it, counting letters per domain on its /metrics."""
    served: EventFunction[DeadLetterContext]

    async def setup(settings: Settings) -> DeadLetterContext:
        context = await DeadLetterContext.create(settings)
        context.recorded = recorded
        return context

    served = EventFunction("dead-letter", setup, record)
    recorded = DeadLetterMetrics(served.metrics.registry).letters
    return served


def _errors(attributes: dict[str, str]) -> dict[str, str]:
    return {name: attributes[name][:200] for name in ERROR_EXTENSIONS if name in attributes}
