"""The pack's Knative manifests (`knative/`, `eventing/`) read into typed specs for tests and the runner.

The objects are validated by frozen pydantic models (models.py), which callers read directly or reduced to specs;
every problem is a ManifestError naming the file, the object and the field.
"""

from eco2_tools.manifests.documents import Document, ManifestError, read_documents
from eco2_tools.manifests.durations import parse_go_duration, parse_iso8601_duration
from eco2_tools.manifests.loader import MANIFEST_DIRS, Manifests
from eco2_tools.manifests.models import BrokerSpec, DeliverySpec, ServiceSpec, TriggerSpec, backoff_seconds
from eco2_tools.manifests.specs import (
    AUTOSCALING,
    BROKER_CLASS_ANNOTATION,
    DEFAULT_BACKOFF_DELAY_SECONDS,
    DEFAULT_BACKOFF_POLICY,
    DEFAULT_READINESS_PATH,
    DEFAULT_RETRY,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    EVENTING_API,
    MAX_PARALLELISM,
    MAX_WINDOW_SECONDS,
    MIN_PARALLELISM,
    MIN_WINDOW_SECONDS,
    PARALLELISM_ANNOTATION,
    RABBITMQ_BROKER_CLASS,
    RABBITMQ_BROKER_CONFIG_API,
    SERVING_API,
    BackoffPolicy,
)

__all__ = [
    "AUTOSCALING",
    "BROKER_CLASS_ANNOTATION",
    "DEFAULT_BACKOFF_DELAY_SECONDS",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_READINESS_PATH",
    "DEFAULT_RETRY",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "EVENTING_API",
    "MANIFEST_DIRS",
    "MAX_PARALLELISM",
    "MAX_WINDOW_SECONDS",
    "MIN_PARALLELISM",
    "MIN_WINDOW_SECONDS",
    "PARALLELISM_ANNOTATION",
    "RABBITMQ_BROKER_CLASS",
    "RABBITMQ_BROKER_CONFIG_API",
    "SERVING_API",
    "BackoffPolicy",
    "BrokerSpec",
    "DeliverySpec",
    "Document",
    "ManifestError",
    "Manifests",
    "ServiceSpec",
    "TriggerSpec",
    "backoff_seconds",
    "parse_go_duration",
    "parse_iso8601_duration",
    "read_documents",
]
