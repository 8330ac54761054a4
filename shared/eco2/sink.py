"""Where a process's events go on their way into the broker: the interface of a sender, and a send's outcome.

The gateway's K_SINK client (eco2.gateway.sink.EventSink) and the Celery mode's chain publisher
(eco2.celery_runtime.submit.CelerySink) both implement it; the gateway is handed one and knows neither runtime.
A send has an outcome, never an exception: `ok` (the broker has it), or one that leaves the event in the outbox:
`timeout` (it may or may not have been taken), `unreachable`, `rejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Protocol


class SendOutcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    REJECTED = "rejected"


class Sink(Protocol):
    """Where the gateway's events go: the broker ingress (EventSink), or a Celery chain (ECO2_RUNTIME=celery)."""

    url: str  # names the outbox: the gateways sending to one place share it

    async def send(
        self, headers: dict[str, str], body: bytes, *, timeout_seconds: float | None = None
    ) -> SendOutcome: ...

    async def aclose(self) -> None: ...


# A runtime's sink for the gateway, given its environment and send timeout; None: the gateway's own (K_SINK).
SinkFactory = Callable[[Mapping[str, str], float], Sink | None]
