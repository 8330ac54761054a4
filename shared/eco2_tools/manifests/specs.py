"""Knative's API names and defaults, the Broker's spec and the broker's retry backoff formula."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from eco2_tools.manifests.models import DeliverySpec

__all__ = [
    "DEFAULT_BACKOFF_DELAY_SECONDS",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_READINESS_PATH",
    "DEFAULT_RETRY",
    "BackoffPolicy",
    "BrokerSpec",
    "QueueType",
    "backoff_seconds",
]

BackoffPolicy = Literal["exponential", "linear"]
QueueType = Literal["quorum", "classic"]

SERVING_API = "serving.knative.dev/v1"
EVENTING_API = "eventing.knative.dev/v1"
RABBITMQ_BROKER_CONFIG_API = "eventing.knative.dev/v1alpha1"
RABBITMQ_BROKER_CLASS = "RabbitMQBroker"
BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
PARALLELISM_ANNOTATION = "rabbitmq.eventing.knative.dev/parallelism"
AUTOSCALING = "autoscaling.knative.dev/"

# Knative Eventing's defaults (reference/knative-crds/SOURCES.md): a delivery spec without `retry` retries 5
# times; backoffDelay defaults to 50 ms; backoffPolicy to exponential.
DEFAULT_RETRY = 5
DEFAULT_BACKOFF_DELAY_SECONDS = 0.05
DEFAULT_BACKOFF_POLICY: BackoffPolicy = "exponential"
# Knative Serving's defaults: target 100 concurrent requests, stable window 60 s (bounds 6 s..1 h), no pod
# retention after scale-to-zero, max-scale 0 meaning unbounded, revision timeout 300 s.
DEFAULT_TARGET = 100
DEFAULT_WINDOW_SECONDS = 60.0
MIN_WINDOW_SECONDS = 6.0
MAX_WINDOW_SECONDS = 3600.0
DEFAULT_TIMEOUT_SECONDS = 300
# The RabbitMQ broker's bounds for the parallelism annotation (default 1: one event at a time, FIFO).
MIN_PARALLELISM = 1
MAX_PARALLELISM = 1000
# Where a Service without a readinessProbe is asked whether it is ready: the liveness path every function
# serves (a process that answers is taken as ready, as the local runner always did).
DEFAULT_READINESS_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    name: str
    delivery: DeliverySpec | None
    queue_type: QueueType


def backoff_seconds(delivery: DeliverySpec, attempt: int) -> float:
    """The wait before retry number `attempt` (1-based: 1 is the first redelivery after the first failure).

    The formula is the RabbitMQ broker's, whose dispatcher hands each event to the CloudEvents Go SDK's retry
    loop (`ContextWithRetriesExponentialBackoff` / `...LinearBackoff`); that loop calls
    `RetryParams.BackoffFor(retries so far + 1)`, so:

        exponential: delay * 2 ** attempt      (PT10S -> 20 s, 40 s, 80 s)
        linear:      delay * attempt           (PT10S -> 10 s, 20 s, 30 s)

    Knative's core (channel-based) broker differs by one step: go-retryablehttp passes the 0-based retry
    index, giving delay * 2 ** (attempt - 1) and delay * (attempt - 1). The CRD text ("backoffDelay *
    2^<numberOfRetries>") fits the RabbitMQ broker's reading, which is the broker this pack deploys and the
    local runner emulates.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    delay = delivery.backoff_delay_seconds
    if delivery.backoff_policy == "linear":
        return delay * attempt
    return delay * math.ldexp(1.0, attempt)
