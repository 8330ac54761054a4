"""Starting a scan's chain (or a chat's task): the gateway's sink when ECO2_RUNTIME=celery, instead of K_SINK.

The gateway's durable outbox stays in front of it unchanged: the job and its pending eco2.scan.requested are
written first, then this publishes the chain (publisher confirms: `ok` only once RabbitMQ has it). Anything
else leaves the entry for the sweeper, which sends the same event again; the chain's first task id is the
event's own id and every stage is idempotent, so a second chain for one scan records and grants nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from celery import Celery, Signature, chain
from cloudevents.conversion import to_dict
from cloudevents.http import from_http

from eco2.celery_runtime.config import CHAIN, CHAT, CeleryConfig, EventDict, make_app
from eco2.events import EventType
from eco2.sink import SendOutcome

log = logging.getLogger("eco2.gateway")


def work_for(app: Celery, config: CeleryConfig, event: EventDict) -> Signature:
    """A scan: vision → rules → answer → reward → persist, each on its own queue; a chat message: its one task.

    The first task's id is the event's id, so a re-sent event is recognisable in the result backend too.
    """
    first_id = str(event["id"])
    if event.get("type") == EventType.CHAT_REQUESTED:
        return app.signature(config.task_name(CHAT), args=(event,), task_id=first_id)
    first, *rest = (app.signature(config.task_name(task)) for task in CHAIN)
    return chain(first.clone(args=(event,)).set(task_id=first_id), *rest)


class CelerySink:
    """Publishes one chain per scan (one task per chat); the interface of the K_SINK client (`EventSink`)."""

    def __init__(self, config: CeleryConfig, *, timeout_seconds: float) -> None:
        self.config = config
        self.app = make_app(config)
        self._timeout = timeout_seconds
        # The outbox is keyed by this: the gateways of one Celery fleet share (and sweep) one outbox.
        self.url = f"celery+{config.broker_url.split('@')[-1]}/{config.queue_prefix}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, timeout_seconds: float) -> CelerySink:
        return cls(CeleryConfig.from_env(env), timeout_seconds=timeout_seconds)

    def publish(self, event: EventDict) -> None:
        """Blocking: returns once the broker confirmed the first task's message."""
        work_for(self.app, self.config, event).apply_async(retry=False)

    async def send(self, headers: dict[str, str], body: bytes, *, timeout_seconds: float | None = None) -> SendOutcome:
        event: EventDict = to_dict(from_http(headers, body))
        try:
            # kombu publishes synchronously: off the event loop, bounded like an HTTP send.
            await asyncio.wait_for(asyncio.to_thread(self.publish, event), timeout_seconds or self._timeout)
        except TimeoutError:
            return SendOutcome.TIMEOUT
        except Exception as exc:
            log.warning("chain not published", extra={"fields": {"error": type(exc).__name__}})
            return SendOutcome.UNREACHABLE
        return SendOutcome.OK

    async def aclose(self) -> None:
        await asyncio.to_thread(self.app.close)
