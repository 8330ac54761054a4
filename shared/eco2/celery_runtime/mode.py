"""Which runtime carries the scan pipeline (ECO2_RUNTIME): read without importing Celery."""

from __future__ import annotations

from collections.abc import Mapping

from eco2.settings import SettingsError

RUNTIME_ENV = "ECO2_RUNTIME"
KNATIVE = "knative"
CELERY = "celery"


def runtime_of(env: Mapping[str, str]) -> str:
    """`celery` when the scan pipeline runs as a Celery chain, else `knative` (the pack's default)."""
    runtime = (env.get(RUNTIME_ENV) or KNATIVE).strip().lower()
    if runtime not in (KNATIVE, CELERY):
        raise SettingsError(f"{RUNTIME_ENV} must be {KNATIVE} or {CELERY}, got {runtime!r}")
    return runtime
