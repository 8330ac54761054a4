"""Cache-sync test helpers: this run's own exchanges, tokens with their jti, publishing on a fanout exchange,
and a fleet of function processes started side by side."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import jwt

from eco2.cachesync.events import SyncEventType, TokenRevoked, amqp_message
from tests.gateway.support import SECRET, token
from tests.support import REDIS_TEST_URL, Child, free_port, start_child, wait_for

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CLOSED_AMQP_URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1: the broker is unreachable


@dataclass(frozen=True)
class Exchanges:
    """A test's own pair of fanout exchanges (durable, as the real ones: deleted by delete_made_exchanges)."""

    blacklist: str
    catalog: str

    @classmethod
    def fresh(cls) -> Exchanges:
        prefix = f"test-cachesync-{uuid.uuid4().hex[:8]}"
        made = cls(f"{prefix}.eco2.auth.blacklist", f"{prefix}.eco2.character.catalog")
        MADE.append(made)
        return made

    def env(self) -> dict[str, str]:
        return {"ECO2_BLACKLIST_EXCHANGE": self.blacklist, "ECO2_CATALOG_EXCHANGE": self.catalog}


MADE: list[Exchanges] = []


async def delete_made_exchanges() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        while MADE:
            made = MADE.pop()
            for name in (made.blacklist, made.catalog):
                await channel.exchange_delete(name)


@dataclass(frozen=True)
class Token:
    raw: str
    jti: str
    user: str
    expires_at: float

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw}"}

    def revoked(self) -> TokenRevoked:
        return TokenRevoked(jti=self.jti, user_id=self.user, expires_at=self.expires_at)


def new_token(user: str | None = None, ttl: float = 600) -> Token:
    user = user or f"user-{uuid.uuid4().hex[:6]}"
    raw = token(user, ttl=ttl)
    claims = jwt.decode(raw, options={"verify_signature": False})
    return Token(raw, str(claims["jti"]), user, float(claims["exp"]))


def role_token(role: str) -> str:
    now = int(time.time())
    claims = {"sub": "u-role", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600, "iss": "eco2", "aud": "eco2"}
    return jwt.encode({**claims, "role": role}, SECRET, algorithm="HS256")


async def publish(exchange: str, kind: SyncEventType, data: Any) -> None:
    """Publish an event the way other systems do: binary-mode CloudEvent on the fanout exchange."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await publish_on(await connection.channel(), exchange, kind, data)


async def publish_on(channel: aio_pika.abc.AbstractChannel, exchange: str, kind: SyncEventType, data: Any) -> None:
    headers, body = amqp_message(kind, data, source="/tests/cachesync")
    target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    await target.publish(aio_pika.Message(body, headers=dict(headers), content_type="application/json"), "")


def function_env(exchanges: Exchanges, **overrides: str) -> dict[str, str]:
    env = {
        "REDIS_URL": REDIS_TEST_URL,
        "AMQP_URL": AMQP_URL,
        "ECO2_ENV": "production",
        "ECO2_JWT_SECRET": SECRET,
        "ECO2_JWT_PUBLIC_KEY": "",
        "ECO2_TRUST_USER_HEADER": "false",
        "ECO2_CACHE_BACKOFF_CAP_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
        **exchanges.env(),
    }
    env.update(overrides)
    return env


async def start_fleet(name: str, count: int, env: Mapping[str, str], log_dir: Path) -> list[Child]:
    """`count` processes of `eco2 serve name`, started side by side; returned once each answers /readyz."""

    def one() -> Child:
        port = free_port()
        return start_child(["serve", name, "--port", str(port)], port=port, env=env, log_dir=log_dir, timeout=60)

    children = list(await asyncio.gather(*(asyncio.to_thread(one) for _ in range(count))))
    async with httpx.AsyncClient(timeout=2) as http:
        for child in children:

            async def ready(child: Child = child) -> bool:
                return (await http.get(f"{child.url}/readyz")).status_code == 200

            await wait_for(ready, timeout=30, what=f"{child.url} ready")
    return children


def stop_all(children: list[Child]) -> None:
    for child in children:
        child.stop()


async def statuses(http: httpx.AsyncClient, urls: list[str], headers: Mapping[str, str]) -> list[int]:
    answers = await asyncio.gather(*(http.get(f"{url}/api/v1/check", headers=dict(headers)) for url in urls))
    return [answer.status_code for answer in answers]


async def all_refuse(http: httpx.AsyncClient, urls: list[str], headers: Mapping[str, str]) -> bool:
    return all(status == 401 for status in await statuses(http, urls, headers))


@dataclass(frozen=True)
class Heard:
    headers: dict[str, str]
    body: bytes
    message_id: str | None
    persistent: bool


@contextlib.asynccontextmanager
async def hearing(exchange: str) -> AsyncIterator[asyncio.Queue[Heard]]:
    """Every message published on `exchange` from now on, through a queue of this test's own bound to it."""
    heard: asyncio.Queue[Heard] = asyncio.Queue()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(target)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            headers = {key: str(value) for key, value in (message.headers or {}).items()}
            persistent = message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            heard.put_nowait(Heard(headers, message.body, message.message_id, persistent))

        await queue.consume(keep, no_ack=True)
        yield heard
