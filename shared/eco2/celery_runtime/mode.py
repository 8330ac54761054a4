"""Which runtime carries the scan pipeline (ECO2_RUNTIME): read without importing Celery."""

from __future__ import annotations

from collections.abc import Mapping

from eco2.env import SettingsError
from eco2.sink import Sink

RUNTIME_ENV = "ECO2_RUNTIME"
KNATIVE = "knative"
CELERY = "celery"


def runtime_of(env: Mapping[str, str]) -> str:
    """`celery` when the scan pipeline runs as a Celery chain, else `knative` (the pack's default)."""
    runtime = (env.get(RUNTIME_ENV) or KNATIVE).strip().lower()
    if runtime not in (KNATIVE, CELERY):
        raise SettingsError(f"{RUNTIME_ENV} must be {KNATIVE} or {CELERY}, got {runtime!r}")
    return runtime


def gateway_sink(env: Mapping[str, str], timeout_seconds: float) -> Sink | None:
    """The gateway's sink under ECO2_RUNTIME=celery: the chain's publisher (Celery loaded only then); else None,
    and the gateway sends to K_SINK. functions/gateway/main.py hands it to the gateway (an eco2.sink.SinkFactory)."""
    if runtime_of(env) != CELERY:
        return None
    from eco2.celery_runtime.submit import CelerySink

    return CelerySink.from_env(env, timeout_seconds=timeout_seconds)
