"""The pack's Kubernetes objects as pydantic models (camelCase aliases), each read into its spec."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar, NoReturn, Self

from pydantic import AfterValidator, AliasChoices, Field, ValidationInfo, field_validator, model_validator

from eco2_tools.manifests import specs
from eco2_tools.manifests.fields import (
    Count,
    GoSeconds,
    IsoSeconds,
    ManifestModel,
    Name,
    PositiveIsoSeconds,
    QuotedCount,
    StrictCount,
    StringMap,
    YamlString,
    expect,
    reject,
    within,
)
from eco2_tools.manifests.specs import BackoffPolicy, QueueType

__all__ = ["BrokerConfigObject", "BrokerObject", "ConfigMapObject", "DeliverySpec", "ServiceSpec", "TriggerSpec"]


def _unsupported(problem: str) -> AfterValidator:
    """A field the pack refuses whatever it holds (validators run only on fields the manifest sets)."""

    def refuse(_value: object) -> NoReturn:
        raise reject(problem)

    return AfterValidator(refuse)


# The metadata's `annotations` read a second time, as typed settings. AliasChoices rather than a plain alias:
# two fields with one plain alias would give mypy's pydantic plugin an __init__ with a parameter named twice.
_ANNOTATIONS_AGAIN = AliasChoices("annotations")


class AnnotatedMetadata(ManifestModel):
    # Kubernetes keeps annotations as strings: an unquoted `5` or `true` in YAML would be refused.
    annotations: StringMap = Field(default_factory=dict)


# --- destinations and delivery -------------------------------------------------------------------------------


class ObjectRef(ManifestModel):
    """Another object, by apiVersion, kind and name; a subclass says which kind it must be."""

    target: ClassVar[tuple[str, str]]
    api_version: YamlString = Field(alias="apiVersion")
    kind: YamlString
    name: Name

    @model_validator(mode="after")
    def _of_the_target_kind(self) -> Self:
        if (self.api_version, self.kind) != self.target:
            api_version, kind = self.target
            raise reject(f"must be a {api_version} {kind}, got {self.api_version}/{self.kind}")
        return self


class ServiceRef(ObjectRef):
    target = (specs.SERVING_API, "Service")
    namespace: str | None = None

    @field_validator("namespace")
    @classmethod
    def _same_namespace(cls, namespace: str, info: ValidationInfo) -> str:
        own = (info.context or {}).get("namespace")
        if own is not None and namespace != own:
            raise reject(f"points into namespace {namespace!r}; only {own!r} is supported")
        return namespace


class Destination(ManifestModel):
    """A Trigger's subscriber or a dead-letter sink: only a ref to one of the pack's own Services."""

    ref: ServiceRef
    uri: Annotated[object, _unsupported("is not supported: point ref at a Service in knative/")] = None


class DeliverySpec(ManifestModel):
    """A Trigger's or Broker's `spec.delivery`; a field it leaves out takes Knative's default."""

    retry: StrictCount = specs.DEFAULT_RETRY
    backoff_policy: BackoffPolicy = Field(specs.DEFAULT_BACKOFF_POLICY, alias="backoffPolicy")
    backoff_delay_seconds: IsoSeconds = Field(specs.DEFAULT_BACKOFF_DELAY_SECONDS, alias="backoffDelay")
    timeout_seconds: PositiveIsoSeconds | None = Field(None, alias="timeout")
    dead_letter_sink: Destination | None = Field(None, alias="deadLetterSink")

    @property
    def dead_letter_service(self) -> str | None:
        """The Service the broker sends an event to once its retries are spent; None drops the event."""
        return self.dead_letter_sink.ref.name if self.dead_letter_sink is not None else None


# --- Service -------------------------------------------------------------------------------------------------


class EnvVar(ManifestModel):
    name: Name
    value: YamlString = ""
    # Resolved by Kubernetes from a Secret or the downward API; nothing to read here.
    value_from: object = Field(None, alias="valueFrom")


class ConfigMapRef(ManifestModel):
    name: Name


class EnvFromSource(ManifestModel):
    config_map_ref: ConfigMapRef | None = Field(None, alias="configMapRef")  # Secrets are not in the repository


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise reject(f"must be an absolute path such as /readyz, got {path!r}")
    return path


class HttpGet(ManifestModel):
    path: Annotated[YamlString, AfterValidator(_absolute)] = "/"  # Kubernetes asks / when no path is set


class Probe(ManifestModel):
    http_get: HttpGet | None = Field(None, alias="httpGet")


class Container(ManifestModel):
    command: Annotated[list[Name], Field(min_length=1)]
    args: list[YamlString] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    env_from: list[EnvFromSource] = Field(default_factory=list, alias="envFrom")
    readiness_probe: Probe | None = Field(None, alias="readinessProbe")

    @field_validator("readiness_probe")
    @classmethod
    def _over_http(cls, probe: Probe) -> Probe:
        if probe.http_get is None:
            raise reject("must be an httpGet probe: the local runner asks the readiness path over HTTP")
        return probe

    @model_validator(mode="after")
    def _env_names_unique(self) -> Container:
        names = [var.name for var in self.env]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise reject(f"env names {', '.join(twice)} twice")
        return self


def _exactly_one(containers: list[Container]) -> list[Container]:
    if len(containers) != 1:
        raise reject(f"must hold exactly one container, got {len(containers)}")
    return containers


class PodSpec(ManifestModel):
    containers: Annotated[list[Container], AfterValidator(_exactly_one)]
    container_concurrency: Count = Field(0, alias="containerConcurrency")  # 0 = unlimited
    timeout_seconds: Annotated[Count, within(1)] = Field(specs.DEFAULT_TIMEOUT_SECONDS, alias="timeoutSeconds")


class Autoscaling(ManifestModel):
    """Knative's autoscaling annotations on a revision template, with Knative's defaults."""

    min_scale: QuotedCount = Field(0, alias=specs.AUTOSCALING + "min-scale")
    max_scale: QuotedCount = Field(0, alias=specs.AUTOSCALING + "max-scale")  # 0 = unbounded
    target: Annotated[QuotedCount, within(1)] = Field(specs.DEFAULT_TARGET, alias=specs.AUTOSCALING + "target")
    window: Annotated[GoSeconds, within(specs.MIN_WINDOW_SECONDS, specs.MAX_WINDOW_SECONDS, "s")] = Field(
        specs.DEFAULT_WINDOW_SECONDS, alias=specs.AUTOSCALING + "window"
    )
    retention: GoSeconds = Field(0.0, alias=specs.AUTOSCALING + "scale-to-zero-pod-retention-period")

    @model_validator(mode="after")
    def _min_below_max(self) -> Autoscaling:
        if self.max_scale and self.min_scale > self.max_scale:
            raise reject(f"min-scale {self.min_scale} exceeds max-scale {self.max_scale}")
        return self


class TemplateMetadata(AnnotatedMetadata):
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, validation_alias=_ANNOTATIONS_AGAIN)


class RevisionTemplate(ManifestModel):
    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    spec: PodSpec


class ServiceBody(ManifestModel):
    template: RevisionTemplate


class ObjectMetadata(ManifestModel):
    name: Name


class ServiceSpec(ManifestModel):
    """A serving.knative.dev/v1 Service running one function of the pack; properties say what running it needs.

    Knative's meanings: max_scale 0 = unbounded, container_concurrency 0 = unlimited, target is the soft
    concurrency per replica; the last replica idles window_seconds, then retention_seconds more, before it stops.
    """

    metadata: ObjectMetadata
    spec: ServiceBody

    @property
    def _container(self) -> Container:
        return self.spec.template.spec.containers[0]

    @property
    def _scaling(self) -> Autoscaling:
        return self.spec.template.metadata.autoscaling

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def command(self) -> tuple[str, ...]:
        return (*self._container.command, *self._container.args)

    @property
    def env(self) -> dict[str, str]:
        """The literal `env` entries; `valueFrom` ones are resolved by Kubernetes and left out."""
        return {var.name: var.value for var in self._container.env if var.value_from is None}

    @property
    def annotations(self) -> dict[str, str]:
        return self.spec.template.metadata.annotations

    @property
    def env_from(self) -> tuple[str, ...]:
        return tuple(ref.config_map_ref.name for ref in self._container.env_from if ref.config_map_ref is not None)

    @property
    def min_scale(self) -> int:
        return self._scaling.min_scale

    @property
    def max_scale(self) -> int:
        return self._scaling.max_scale

    @property
    def target(self) -> int:
        return self._scaling.target

    @property
    def container_concurrency(self) -> int:
        return self.spec.template.spec.container_concurrency

    @property
    def timeout_seconds(self) -> int:
        return self.spec.template.spec.timeout_seconds

    @property
    def window_seconds(self) -> float:
        return self._scaling.window

    @property
    def retention_seconds(self) -> float:
        return self._scaling.retention

    @property
    def readiness_path(self) -> str:
        """The readinessProbe's httpGet path: a replica takes requests once this answers 200."""
        probe = self._container.readiness_probe
        return probe.http_get.path if probe is not None and probe.http_get is not None else specs.DEFAULT_READINESS_PATH

    @property
    def idle_seconds(self) -> float:
        """How long the last replica outlives its last request: the stable window, then the retention."""
        return self.window_seconds + self.retention_seconds


# --- Trigger -------------------------------------------------------------------------------------------------


class TriggerAnnotations(ManifestModel):
    parallelism: Annotated[QuotedCount, within(specs.MIN_PARALLELISM, specs.MAX_PARALLELISM)] = Field(
        specs.MIN_PARALLELISM, alias=specs.PARALLELISM_ANNOTATION
    )


class TriggerMetadata(AnnotatedMetadata):
    name: Name
    options: TriggerAnnotations = Field(default_factory=TriggerAnnotations, validation_alias=_ANNOTATIONS_AGAIN)


class TriggerFilter(ManifestModel):
    attributes: StringMap = Field(default_factory=dict)


class TriggerBody(ManifestModel):
    broker: Name
    filter_: TriggerFilter = Field(default_factory=TriggerFilter, alias="filter")
    subscriber: Destination
    delivery: DeliverySpec | None = None
    broker_ref: Annotated[object, _unsupported("(cross-namespace brokers) is not supported; use spec.broker")] = Field(
        None, alias="brokerRef"
    )
    filters: Annotated[object, _unsupported("is not read by the RabbitMQ broker; use spec.filter.attributes")] = None


class TriggerSpec(ManifestModel):
    """An eventing.knative.dev/v1 Trigger on the pack's RabbitMQ broker, read as the broker reads it."""

    metadata: TriggerMetadata
    spec: TriggerBody

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def broker(self) -> str:
        return self.spec.broker

    @property
    def filter_attributes(self) -> dict[str, str]:
        return self.spec.filter_.attributes

    @property
    def subscriber_service(self) -> str:
        return self.spec.subscriber.ref.name

    @property
    def delivery(self) -> DeliverySpec | None:
        """The Trigger's own delivery; see Manifests.effective_delivery for the one the broker applies."""
        return self.spec.delivery

    @property
    def parallelism(self) -> int:
        return self.metadata.options.parallelism

    def matches(self, attributes: Mapping[str, object]) -> bool:
        """Whether the broker delivers an event with these CloudEvent attributes: exact match on every one."""
        return all(key in attributes and str(attributes[key]) == value for key, value in self.filter_attributes.items())

    def may_match_type(self, event_type: str) -> bool:
        """Whether some event of this type can pass the filter (it filters on this type, or not on type)."""
        wanted = self.filter_attributes.get("type")
        return wanted is None or wanted == event_type


# --- Broker, its RabbitmqBrokerConfig, ConfigMaps ------------------------------------------------------------


class BrokerAnnotations(ManifestModel):
    broker_class: Annotated[str, expect(specs.RABBITMQ_BROKER_CLASS)] = Field(alias=specs.BROKER_CLASS_ANNOTATION)


class BrokerMetadata(AnnotatedMetadata):
    options: BrokerAnnotations = Field(validation_alias=_ANNOTATIONS_AGAIN)


class BrokerConfigRef(ObjectRef):
    target = (specs.RABBITMQ_BROKER_CONFIG_API, "RabbitmqBrokerConfig")


class BrokerBody(ManifestModel):
    config: BrokerConfigRef
    delivery: DeliverySpec | None = None


class BrokerObject(ManifestModel):
    """The eventing.knative.dev/v1 Broker, of the RabbitMQBroker class."""

    metadata: BrokerMetadata
    spec: BrokerBody


class BrokerConfigBody(ManifestModel):
    queue_type: QueueType = Field("quorum", alias="queueType")


class BrokerConfigObject(ManifestModel):
    """The RabbitmqBrokerConfig a Broker names: how its queues are laid out."""

    spec: BrokerConfigBody


class ConfigMapObject(ManifestModel):
    data: StringMap = Field(default_factory=dict)


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
