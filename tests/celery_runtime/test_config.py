"""The Celery runtime's settings and error classes, without a broker."""

from __future__ import annotations

import pytest

from eco2.celery_runtime.config import SEED_RETRY_DELAYS, TASKS, CeleryConfig, make_app
from eco2.celery_runtime.mode import runtime_of
from eco2.celery_runtime.tasks import POISON, failure_status
from eco2.env import SettingsError
from eco2.errors import ModelUnavailable, PoisonEvent, RateLimited, StoreUnavailable


def test_the_seeds_settings_by_default() -> None:
    config = CeleryConfig.from_env({"REDIS_URL": "redis://127.0.0.1:6379/3"})
    assert config.retry_delays == SEED_RETRY_DELAYS == (10, 60, 300)
    assert config.result_url == "redis://127.0.0.1:6379/3"
    conf = make_app(config).conf
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert {q.name for q in conf.task_queues} == {f"eco2.celery.{task}" for task in TASKS}
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in conf.task_queues)


@pytest.mark.parametrize("raw", ["0.5,1", "abc", "0", "10,-1"])
def test_retry_delays_must_be_whole_seconds(raw: str) -> None:
    with pytest.raises(SettingsError, match="ECO2_CELERY_RETRY_DELAYS"):
        CeleryConfig.from_env({"ECO2_CELERY_RETRY_DELAYS": raw})


def test_the_runtime_is_knative_unless_asked() -> None:
    assert runtime_of({}) == "knative"
    assert runtime_of({"ECO2_RUNTIME": " Celery "}) == "celery"
    with pytest.raises(SettingsError, match="ECO2_RUNTIME"):
        runtime_of({"ECO2_RUNTIME": "lambda"})


def test_poison_is_never_retried_and_transient_errors_are() -> None:
    assert failure_status(PoisonEvent("invalid_data", "x")) == POISON
    assert failure_status(RateLimited("slow down", 1)) == "429"
    assert failure_status(ModelUnavailable("model_unavailable", "x")) == "503"
    assert failure_status(StoreUnavailable("store_unavailable", "x")) == "503"
    assert failure_status(RuntimeError("a crash")) == "500"
