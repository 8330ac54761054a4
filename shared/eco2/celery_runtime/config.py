"""The Celery app, configured as the seed configured it: acks late, prefetch 1, confirms, a queue per stage."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu import Connection, Exchange, Queue

from eco2.amqp_cluster import kombu_url
from eco2.env import SettingsError, env_int
from eco2.redis_sentinel import SentinelUrl, is_sentinel_url

# A CloudEvent as a Celery task's argument (cloudevents' to_dict / from_dict).
EventDict = dict[str, Any]

log = logging.getLogger("eco2.celery")

# The chain's steps in order, then the sink of every finished scan's final event (the pack's persist Trigger).
STAGES: tuple[str, ...] = ("vision", "rules", "answer", "reward")
PERSIST = "persist"
CHAIN: tuple[str, ...] = (*STAGES, PERSIST)
# A chat message is one task, not a chain (the chat function answers into the job's stream only).
CHAT = "chat"
TASKS: tuple[str, ...] = (*CHAIN, CHAT)
# The seed's backoff: 10 s, then 60 s, then 300 s, at most 3 retries.
SEED_RETRY_DELAYS = (10, 60, 300)


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    result_url: str = "redis://127.0.0.1:6379/0"
    # Queue and exchange names start with it: a test or a second fleet on one broker gets its own.
    queue_prefix: str = "eco2.celery"
    retry_delays: tuple[int, ...] = SEED_RETRY_DELAYS
    result_expires_seconds: int = 24 * 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CeleryConfig:
        raw_delays = env.get("ECO2_CELERY_RETRY_DELAYS", "")
        try:
            delays = tuple(int(d) for d in raw_delays.split(",") if d.strip()) or SEED_RETRY_DELAYS
        except ValueError:
            delays = ()
        # Whole seconds, at least 1: Celery's native delayed delivery (quorum queues) refuses anything else.
        if not delays or min(delays) < 1:
            message = f"ECO2_CELERY_RETRY_DELAYS must be whole seconds >= 1 separated by commas, got {raw_delays!r}"
            raise SettingsError(message)
        return cls(
            broker_url=kombu_url(env.get("AMQP_URL") or cls.broker_url),
            result_url=env.get("ECO2_CELERY_RESULT_URL") or env.get("REDIS_URL") or cls.result_url,
            queue_prefix=env.get("ECO2_CELERY_QUEUE_PREFIX") or cls.queue_prefix,
            retry_delays=delays,
            result_expires_seconds=env_int(env, "ECO2_JOB_TTL_SECONDS", cls.result_expires_seconds, minimum=60),
        )

    def queue(self, task: str) -> str:
        return f"{self.queue_prefix}.{task}"

    def task_name(self, task: str) -> str:
        return f"eco2.{task}"


def make_app(config: CeleryConfig) -> Celery:
    """The app the worker consumes with and the gateway publishes with: both must agree on every setting here."""
    backend, backend_options = celery_result_backend(config.result_url)
    app = Celery("eco2", broker=config.broker_url, backend=backend, set_as_current=False)
    app.conf.result_backend_transport_options = backend_options
    # Topic: Celery's native delayed delivery (a retry's countdown on quorum queues) routes through topic exchanges.
    exchange = Exchange(config.queue_prefix, type="topic", durable=True)
    app.conf.update(
        task_queues=[
            Queue(config.queue(task), exchange, routing_key=task, durable=True, queue_arguments=_quorum())
            for task in TASKS
        ],
        task_routes={config.task_name(task): {"queue": config.queue(task), "routing_key": task} for task in TASKS},
        task_default_queue=config.queue(STAGES[0]),
        task_default_exchange=config.queue_prefix,
        task_default_exchange_type="topic",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=config.result_expires_seconds,
        # At least once: ack after the work, and a message whose worker died goes back to its queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Publisher confirms: apply_async returns once the broker has the message.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_track_started=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # Quorum queues cannot take a global QoS: prefetch per consumer, as the seed's quorum queues need.
        worker_detect_quorum_queues=True,
    )
    return app


def celery_result_backend(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's result backend for a Redis URL: a redis+sentinel:// one in Celery's own Sentinel form (one
    `sentinel://` address per Sentinel, `;`-separated, the master's name in the transport options)."""
    if not is_sentinel_url(url):
        return url, {}
    parsed = SentinelUrl.parse(url)
    password = f":{quote(parsed.password, safe='')}@" if parsed.password else ""
    addresses = ";".join(f"sentinel://{password}{host}:{port}/{parsed.db}" for host, port in parsed.sentinels)
    options: dict[str, Any] = {"master_name": parsed.master}
    if parsed.sentinel_password:
        options["sentinel_kwargs"] = {"password": parsed.sentinel_password}
    return addresses, options


def _quorum() -> dict[str, str]:
    # Durable replicated queues, as the seed declared them (system-facts: "quorum queues for durability").
    return {"x-queue-type": "quorum"}


def delete_topology(config: CeleryConfig) -> None:
    """Delete the queues and the exchange under the config's prefix (a test's or a benchmark's own)."""
    with Connection(config.broker_url) as connection:
        channel = connection.channel()
        for task in TASKS:
            channel.queue_delete(config.queue(task))
        channel.exchange_delete(config.queue_prefix)


def consumers(config: CeleryConfig, tasks: tuple[str, ...] = TASKS) -> dict[str, int]:
    """How many consumers each task's queue has (a worker is consuming once its queues have one).

    0 for a queue not declared yet, and for every queue while the broker does not answer (a busy broker's
    connect timeout included): the caller asks again until its own deadline.
    """
    counts = dict.fromkeys(tasks, 0)
    try:
        with Connection(config.broker_url, connect_timeout=10) as connection:
            for task in tasks:
                channel = connection.channel()
                with contextlib.suppress(Exception):  # a queue not declared yet: a 404, which closes the channel
                    counts[task] = int(channel.queue_declare(config.queue(task), passive=True).consumer_count)
                with contextlib.suppress(Exception):
                    channel.close()
    except (OSError, ConnectionError) as exc:  # TimeoutError is an OSError
        log.info("the broker did not answer the consumer count", extra={"fields": {"error": type(exc).__name__}})
    return counts
