"""RabbitmqSource (sources.knative.dev/v1alpha1): events other systems publish on an exchange, into the Broker.

Read from the documents Manifests.load keeps (it does not model this kind itself): `rabbitmq_sources(manifests)`.
The local runner (eco2_tools.local.sources) consumes each source's exchange and POSTs to the broker ingress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from eco2_tools.manifests import specs
from eco2_tools.manifests.documents import Document
from eco2_tools.manifests.fields import Count, GoSeconds, ManifestModel, Name, StrictCount, validate, within
from eco2_tools.manifests.loader import Manifests
from eco2_tools.manifests.specs import BackoffPolicy

__all__ = ["RABBITMQ_SOURCE", "RabbitmqSourceObject", "RabbitmqSourceSpec", "SourceDelivery", "rabbitmq_sources"]

RABBITMQ_SOURCE = ("sources.knative.dev/v1alpha1", "RabbitmqSource")
# The adapter's defaults when the source has no delivery spec (eventing-rabbitmq's source adapter).
DEFAULT_SOURCE_RETRY = 5
DEFAULT_SOURCE_BACKOFF_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class SourceDelivery:
    retry: int
    backoff_policy: BackoffPolicy
    backoff_delay_seconds: float

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` (1-based): delay * 2^attempt or delay * attempt, as the CRD says."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_seconds * attempt
        return self.backoff_delay_seconds * 2.0**attempt


@dataclass(frozen=True, slots=True)
class RabbitmqSourceSpec:
    name: str
    exchange: str
    queue: str
    parallelism: int
    delivery: SourceDelivery
    sink_broker: str  # the Broker it delivers to (the pack's only sink kind for a source)


class ResourcesConfig(ManifestModel):
    exchange_name: Name = Field(alias="exchangeName")
    queue_name: Name = Field(alias="queueName")
    parallelism: Annotated[Count, within(specs.MIN_PARALLELISM, specs.MAX_PARALLELISM)] = specs.MIN_PARALLELISM
    predeclared: Literal[False] = False


class SourceDeliveryModel(ManifestModel):
    retry: StrictCount = DEFAULT_SOURCE_RETRY
    backoff_policy: BackoffPolicy = Field(specs.DEFAULT_BACKOFF_POLICY, alias="backoffPolicy")
    # time.Duration text ("200ms"), unlike a Trigger's ISO-8601.
    backoff_delay: GoSeconds = Field(DEFAULT_SOURCE_BACKOFF_SECONDS, alias="backoffDelay")


class BrokerSinkRef(ManifestModel):
    api_version: Literal["eventing.knative.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Broker"]
    name: Name


class BrokerSink(ManifestModel):
    ref: BrokerSinkRef


class RabbitmqSourceBody(ManifestModel):
    resources: ResourcesConfig = Field(alias="rabbitmqResourcesConfig")
    delivery: SourceDeliveryModel = Field(default_factory=SourceDeliveryModel)
    sink: BrokerSink


class RabbitmqSourceObject(ManifestModel):
    spec: RabbitmqSourceBody

    def to_spec(self, name: str) -> RabbitmqSourceSpec:
        delivery = self.spec.delivery
        return RabbitmqSourceSpec(
            name=name,
            exchange=self.spec.resources.exchange_name,
            queue=self.spec.resources.queue_name,
            parallelism=self.spec.resources.parallelism,
            delivery=SourceDelivery(delivery.retry, delivery.backoff_policy, delivery.backoff_delay),
            sink_broker=self.spec.sink.ref.name,
        )


def rabbitmq_sources(manifests: Manifests) -> dict[str, RabbitmqSourceSpec]:
    """Every RabbitmqSource of the manifests; one whose sink is not the pack's Broker is a ManifestError."""
    found: dict[str, RabbitmqSourceSpec] = {}
    for doc in manifests.documents:
        if (doc.api_version, doc.kind) == RABBITMQ_SOURCE:
            spec = validate(doc, RabbitmqSourceObject).to_spec(doc.name)
            _check_sink(doc, spec, manifests.broker.name)
            found[doc.name] = spec
    return found


def _check_sink(doc: Document, spec: RabbitmqSourceSpec, broker: str) -> None:
    if spec.sink_broker != broker:
        doc.fail(f"spec.sink.ref names Broker {spec.sink_broker!r}; the pack's Broker is {broker!r}")
