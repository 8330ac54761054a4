"""Knative's API names and defaults (the Broker's spec and the retry backoff are in eco2_tools.manifests.models)."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "DEFAULT_BACKOFF_DELAY_SECONDS",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_READINESS_PATH",
    "DEFAULT_RETRY",
    "BackoffPolicy",
    "QueueType",
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
