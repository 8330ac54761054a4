"""The pack's Knative manifests (`knative/`, `eventing/`) read into typed specs for tests and the runner."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

__all__ = [
    "DEFAULT_BACKOFF_DELAY_SECONDS",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_RETRY",
    "MANIFEST_DIRS",
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

BackoffPolicy = Literal["exponential", "linear"]

# The directories under the project root that hold manifests, in load order.
MANIFEST_DIRS: tuple[str, ...] = ("knative", "eventing")

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

_KUSTOMIZATION_NAMES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
_NUMBER = r"\d+(?:[.,]\d+)?"
# ISO-8601 durations as Knative accepts them for delivery (PT10S, PT0.05S, PT1M, P1DT2H, P1W). Years and
# months have no fixed length, so they are refused rather than guessed.
_ISO_DURATION = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?"
)
_ISO_UNIT_SECONDS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
# Go durations as Knative reads its autoscaling annotations ("60s", "5m", "1m30s", "500ms").
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class ManifestError(ValueError):
    """A manifest file or object the pack cannot use; the message names the file and the object."""

    def __init__(self, path: Path | str, obj: str, problem: str) -> None:
        self.path = str(path)
        self.obj = obj
        self.problem = problem
        where = f"{self.path}: {obj}" if obj else self.path
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of a manifest file: where it came from and its body."""

    path: Path
    index: int  # position of the document in its file, 0-based, counting only non-empty documents
    body: dict[str, Any] = field(hash=False)

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        metadata = self.body.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""

    @property
    def label(self) -> str:
        """`Kind/name`, as error messages name the object."""
        return f"{self.kind or '?'}/{self.name or '?'}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Knative Serving Service, reduced to what running the function needs."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(hash=False)  # literal `env` entries; `valueFrom` entries are left out
    annotations: dict[str, str] = field(hash=False)  # spec.template.metadata.annotations
    env_from: tuple[str, ...]  # ConfigMap names from `envFrom` (Secrets are not in the repository)
    min_scale: int
    max_scale: int  # 0 = unbounded, as in Knative
    target: int  # soft concurrency target per replica
    container_concurrency: int  # hard limit per replica; 0 = unlimited
    timeout_seconds: int  # revision request timeout
    window_seconds: float  # autoscaling stable window: idle this long before scaling to zero
    retention_seconds: float  # scale-to-zero-pod-retention-period: keep the last replica this much longer

    @property
    def idle_seconds(self) -> float:
        """How long the last replica outlives its last request: the stable window, then the retention."""
        return self.window_seconds + self.retention_seconds


@dataclass(frozen=True, slots=True)
class DeliverySpec:
    """A Trigger's or Broker's `spec.delivery`, with Knative's defaults applied."""

    retry: int
    backoff_policy: BackoffPolicy
    backoff_delay_seconds: float
    timeout_seconds: float | None
    dead_letter_service: str | None


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """A Knative Eventing Trigger as the RabbitMQ broker reads it."""

    name: str
    broker: str
    filter_attributes: dict[str, str] = field(hash=False)
    subscriber_service: str
    delivery: DeliverySpec | None  # the Trigger's own; see Manifests.effective_delivery
    parallelism: int = 1

    def matches(self, attributes: Mapping[str, object]) -> bool:
        """Whether the broker delivers an event with these CloudEvent attributes: exact match on every one."""
        return all(key in attributes and str(attributes[key]) == value for key, value in self.filter_attributes.items())

    def may_match_type(self, event_type: str) -> bool:
        """Whether some event of this type can pass the filter (it filters on this type, or not on type)."""
        wanted = self.filter_attributes.get("type")
        return wanted is None or wanted == event_type


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    name: str
    delivery: DeliverySpec | None
    queue_type: Literal["quorum", "classic"]


@dataclass(frozen=True, slots=True)
class Manifests:
    """Everything under `<root>/knative` and `<root>/eventing`, parsed."""

    services: dict[str, ServiceSpec] = field(hash=False)
    triggers: dict[str, TriggerSpec] = field(hash=False)
    broker: BrokerSpec
    config_maps: dict[str, dict[str, str]] = field(hash=False)
    documents: tuple[Document, ...] = field(hash=False)

    @classmethod
    def load(cls, root: Path) -> Manifests:
        """Read every YAML document of `root/knative/*.yaml` and `root/eventing/*.yaml` (not kustomizations).

        Kinds the pack does not model (PingSource, RabbitmqSource, Secret, ...) are kept in `documents` only.
        Raises ManifestError naming the file and object on anything malformed, duplicated or unsupported.
        """
        documents: list[Document] = []
        for directory in MANIFEST_DIRS:
            path = root / directory
            if not path.is_dir():
                raise ManifestError(path, "", "manifest directory not found")
            documents.extend(read_documents(path))

        services: dict[str, ServiceSpec] = {}
        triggers: dict[str, TriggerSpec] = {}
        config_maps: dict[str, dict[str, str]] = {}
        broker_configs: dict[str, Document] = {}
        brokers: list[Document] = []
        first_seen: dict[tuple[str, str, str], Document] = {}
        for doc in documents:
            identity = (doc.kind, str(doc.body["metadata"].get("namespace", "")), doc.name)
            if identity in first_seen:
                _fail(doc, f"defined twice (first in {first_seen[identity].path})")
            first_seen[identity] = doc
            key = (doc.api_version, doc.kind)
            if key == (SERVING_API, "Service"):
                services[doc.name] = _parse_service(doc)
            elif key == (EVENTING_API, "Trigger"):
                triggers[doc.name] = _parse_trigger(doc)
            elif key == ("v1", "ConfigMap"):
                config_maps[doc.name] = _parse_config_map(doc)
            elif key == (RABBITMQ_BROKER_CONFIG_API, "RabbitmqBrokerConfig"):
                broker_configs[doc.name] = doc
            elif key == (EVENTING_API, "Broker"):
                brokers.append(doc)
            elif doc.kind in ("Service", "Trigger", "Broker"):
                _fail(doc, f"unsupported apiVersion {doc.api_version!r} for kind {doc.kind}")

        if len(brokers) != 1:
            found = ", ".join(f"{d.path}: {d.label}" for d in brokers) or "none"
            raise ManifestError(root / "eventing", "", f"expected exactly one Broker, found {found}")
        broker = _parse_broker(brokers[0], broker_configs)
        return cls(
            services=services,
            triggers=triggers,
            broker=broker,
            config_maps=config_maps,
            documents=tuple(documents),
        )

    def effective_delivery(self, trigger: TriggerSpec) -> DeliverySpec | None:
        """The delivery the broker applies to a Trigger: its own spec if it has one, else the Broker's.

        The whole spec is taken from one place, not merged field by field; defaults (retry 5, 50 ms,
        exponential) were applied when the spec was parsed. None means neither has one: no retries, and a
        failed event is dropped.
        """
        return trigger.delivery if trigger.delivery is not None else self.broker.delivery

    def environment(self, service: str) -> dict[str, str]:
        """A Service's environment as Kubernetes builds it: ConfigMaps' data (envFrom order), then `env`."""
        spec = self.services[service]
        merged: dict[str, str] = {}
        for name in spec.env_from:
            merged.update(self.config_maps.get(name, {}))
        merged.update(spec.env)
        return merged


def read_documents(directory: Path) -> list[Document]:
    """Every non-empty YAML document in `directory/*.yaml|*.yml`, by file name; kustomizations skipped."""
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and p.name not in _KUSTOMIZATION_NAMES
    )
    documents: list[Document] = []
    for path in files:
        try:
            loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise ManifestError(path, "", f"not valid YAML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(path, "", f"cannot read: {exc}") from None
        index = 0
        for body in loaded:
            if body is None:
                continue
            if not isinstance(body, dict):
                raise ManifestError(path, f"document {index}", "is not a mapping")
            doc = Document(path=path, index=index, body=body)
            for key in ("apiVersion", "kind"):
                if not isinstance(body.get(key), str) or not body[key]:
                    _fail(doc, f"{key} is missing or not a string")
            metadata = body.get("metadata")
            if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
                _fail(doc, "metadata.name is missing or not a string")
            documents.append(doc)
            index += 1
    return documents


def parse_iso8601_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT10S, PT0.05S, PT1M, PT1.5S, P1DT2H or P1W.

    Years and months are refused (no fixed length); so are negative and empty durations ("P", "PT").
    """
    match = _ISO_DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()) or text.strip().endswith("T"):
        raise ValueError(f"not an ISO-8601 duration (like PT10S or PT0.05S): {text!r}")
    return sum(
        float(value.replace(",", ".")) * _ISO_UNIT_SECONDS[unit]
        for unit, value in match.groupdict().items()
        if value is not None
    )


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration as Knative's autoscaling annotations use them: "60s", "5m", "1m30s", "0"."""
    raw = text.strip() if isinstance(text, str) else ""
    if raw == "0":
        return 0.0
    parts = _GO_DURATION_PART.findall(raw)
    if not parts or "".join(number + unit for number, unit in parts) != raw:
        raise ValueError(f"not a Go duration (like 60s, 5m or 1m30s): {text!r}")
    return sum(float(number) * _GO_UNIT_SECONDS[unit] for number, unit in parts)


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


# --- parsing ------------------------------------------------------------------------------------------------


def _fail(doc: Document, problem: str) -> NoReturn:
    raise ManifestError(doc.path, doc.label, problem)


def _mapping(doc: Document, value: object, where: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        _fail(doc, f"{where} must be a mapping" if value is not None else f"{where} is missing")
    return value


def _string_map(doc: Document, value: object, where: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, item in _mapping(doc, value, where).items():
        if not isinstance(item, str):
            _fail(doc, f"{where}.{key} must be a string (quote it in YAML), got {item!r}")
        result[str(key)] = item
    return result


def _string(doc: Document, value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(doc, f"{where} must be a non-empty string, got {value!r}")
    return value


def _int(doc: Document, value: object, where: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        _fail(doc, f"{where} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            _fail(doc, f"{where} must be an integer, got {value!r}")
    if not isinstance(value, int):
        _fail(doc, f"{where} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        _fail(doc, f"{where} must be {bounds}, got {value}")
    return value


def _annotation_int(doc: Document, annotations: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    raw = annotations.get(key)
    return default if raw is None else _int(doc, raw, f"annotation {key}", minimum=minimum)


def _annotation_duration(doc: Document, annotations: Mapping[str, str], key: str, default: float) -> float:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        return parse_go_duration(raw)
    except ValueError as exc:
        _fail(doc, f"annotation {key}: {exc}")


def _iso_duration(doc: Document, value: object, where: str) -> float:
    if not isinstance(value, str):
        _fail(doc, f"{where} must be an ISO-8601 duration string, got {value!r}")
    try:
        return parse_iso8601_duration(value)
    except ValueError as exc:
        _fail(doc, f"{where}: {exc}")


def _service_ref(doc: Document, destination: object, where: str) -> str:
    """The Service a Destination (`ref`, optional `uri`) points at; only the pack's own Services."""
    spec = _mapping(doc, destination, where, required=True)
    if "uri" in spec:
        _fail(doc, f"{where}.uri is not supported: point {where}.ref at a Service in knative/")
    ref = _mapping(doc, spec.get("ref"), f"{where}.ref", required=True)
    if ref.get("apiVersion") != SERVING_API or ref.get("kind") != "Service":
        _fail(doc, f"{where}.ref must be a {SERVING_API} Service, got {ref.get('apiVersion')}/{ref.get('kind')}")
    namespace = ref.get("namespace")
    own_namespace = doc.body["metadata"].get("namespace")
    if namespace is not None and own_namespace is not None and namespace != own_namespace:
        _fail(doc, f"{where}.ref points into namespace {namespace!r}; only {own_namespace!r} is supported")
    return _string(doc, ref.get("name"), f"{where}.ref.name")


def _parse_delivery(doc: Document, value: object, where: str) -> DeliverySpec | None:
    if value is None:
        return None
    spec = _mapping(doc, value, where)
    policy = spec.get("backoffPolicy", DEFAULT_BACKOFF_POLICY)
    if policy not in ("exponential", "linear"):
        _fail(doc, f"{where}.backoffPolicy must be exponential or linear, got {policy!r}")
    retry = spec.get("retry", DEFAULT_RETRY)
    if not isinstance(retry, int) or isinstance(retry, bool):
        _fail(doc, f"{where}.retry must be an integer, got {retry!r}")
    delay = (
        _iso_duration(doc, spec["backoffDelay"], f"{where}.backoffDelay")
        if "backoffDelay" in spec
        else DEFAULT_BACKOFF_DELAY_SECONDS
    )
    timeout = _iso_duration(doc, spec["timeout"], f"{where}.timeout") if "timeout" in spec else None
    if timeout is not None and timeout <= 0:
        _fail(doc, f"{where}.timeout must be positive")
    dead_letter = (
        _service_ref(doc, spec["deadLetterSink"], f"{where}.deadLetterSink") if "deadLetterSink" in spec else None
    )
    return DeliverySpec(
        retry=_int(doc, retry, f"{where}.retry"),
        backoff_policy="linear" if policy == "linear" else "exponential",
        backoff_delay_seconds=delay,
        timeout_seconds=timeout,
        dead_letter_service=dead_letter,
    )


def _parse_service(doc: Document) -> ServiceSpec:
    spec = _mapping(doc, doc.body.get("spec"), "spec", required=True)
    template = _mapping(doc, spec.get("template"), "spec.template", required=True)
    metadata = _mapping(doc, template.get("metadata"), "spec.template.metadata")
    annotations = _string_map(doc, metadata.get("annotations"), "spec.template.metadata.annotations")
    pod = _mapping(doc, template.get("spec"), "spec.template.spec", required=True)
    containers = pod.get("containers")
    if not isinstance(containers, list) or len(containers) != 1:
        _fail(doc, "spec.template.spec.containers must hold exactly one container")
    container = _mapping(doc, containers[0], "spec.template.spec.containers[0]", required=True)
    where = "spec.template.spec.containers[0]"

    command = container.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
        _fail(doc, f"{where}.command must be a non-empty list of strings")
    args = container.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        _fail(doc, f"{where}.args must be a list of strings")

    env: dict[str, str] = {}
    raw_env = container.get("env", [])
    if not isinstance(raw_env, list):
        _fail(doc, f"{where}.env must be a list")
    for position, entry in enumerate(raw_env):
        item = _mapping(doc, entry, f"{where}.env[{position}]", required=True)
        name = _string(doc, item.get("name"), f"{where}.env[{position}].name")
        if name in env:
            _fail(doc, f"{where}.env names {name} twice")
        if "valueFrom" in item:
            continue  # resolved by Kubernetes from a Secret or the downward API; nothing to read here
        value = item.get("value", "")
        if not isinstance(value, str):
            _fail(doc, f"{where}.env {name} must have a string value (quote it in YAML), got {value!r}")
        env[name] = value

    env_from: list[str] = []
    raw_env_from = container.get("envFrom", [])
    if not isinstance(raw_env_from, list):
        _fail(doc, f"{where}.envFrom must be a list")
    for position, entry in enumerate(raw_env_from):
        item = _mapping(doc, entry, f"{where}.envFrom[{position}]", required=True)
        if "configMapRef" in item:
            ref = _mapping(doc, item["configMapRef"], f"{where}.envFrom[{position}].configMapRef")
            env_from.append(_string(doc, ref.get("name"), f"{where}.envFrom[{position}].configMapRef.name"))

    min_scale = _annotation_int(doc, annotations, AUTOSCALING + "min-scale", 0)
    max_scale = _annotation_int(doc, annotations, AUTOSCALING + "max-scale", 0)
    if max_scale and min_scale > max_scale:
        _fail(doc, f"min-scale {min_scale} exceeds max-scale {max_scale}")
    window = _annotation_duration(doc, annotations, AUTOSCALING + "window", DEFAULT_WINDOW_SECONDS)
    if not MIN_WINDOW_SECONDS <= window <= MAX_WINDOW_SECONDS:
        _fail(doc, f"annotation {AUTOSCALING}window must be between 6s and 1h, got {window:g}s")
    return ServiceSpec(
        name=doc.name,
        command=(*command, *args),
        env=env,
        annotations=annotations,
        env_from=tuple(env_from),
        min_scale=min_scale,
        max_scale=max_scale,
        target=_annotation_int(doc, annotations, AUTOSCALING + "target", DEFAULT_TARGET, minimum=1),
        container_concurrency=_int(doc, pod.get("containerConcurrency", 0), "spec.template.spec.containerConcurrency"),
        timeout_seconds=_int(
            doc,
            pod.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS),
            "spec.template.spec.timeoutSeconds",
            minimum=1,
        ),
        window_seconds=window,
        retention_seconds=_annotation_duration(
            doc, annotations, AUTOSCALING + "scale-to-zero-pod-retention-period", 0.0
        ),
    )


def _parse_trigger(doc: Document) -> TriggerSpec:
    spec = _mapping(doc, doc.body.get("spec"), "spec", required=True)
    if "brokerRef" in spec:
        _fail(doc, "spec.brokerRef (cross-namespace brokers) is not supported; use spec.broker")
    if "filters" in spec:
        _fail(doc, "spec.filters is not read by the RabbitMQ broker; use spec.filter.attributes")
    filter_spec = _mapping(doc, spec.get("filter"), "spec.filter")
    metadata_annotations = _string_map(doc, doc.body["metadata"].get("annotations"), "metadata.annotations")
    return TriggerSpec(
        name=doc.name,
        broker=_string(doc, spec.get("broker"), "spec.broker"),
        filter_attributes=_string_map(doc, filter_spec.get("attributes"), "spec.filter.attributes"),
        subscriber_service=_service_ref(doc, spec.get("subscriber"), "spec.subscriber"),
        delivery=_parse_delivery(doc, spec.get("delivery"), "spec.delivery"),
        parallelism=_parallelism(doc, metadata_annotations.get(PARALLELISM_ANNOTATION)),
    )


def _parallelism(doc: Document, raw: str | None) -> int:
    if raw is None:
        return 1
    where = f"annotation {PARALLELISM_ANNOTATION}"
    return _int(doc, raw, where, minimum=MIN_PARALLELISM, maximum=MAX_PARALLELISM)


def _parse_config_map(doc: Document) -> dict[str, str]:
    return _string_map(doc, doc.body.get("data"), "data")


def _parse_broker(doc: Document, configs: Mapping[str, Document]) -> BrokerSpec:
    annotations = _string_map(doc, doc.body["metadata"].get("annotations"), "metadata.annotations")
    broker_class = annotations.get(BROKER_CLASS_ANNOTATION)
    if broker_class != RABBITMQ_BROKER_CLASS:
        _fail(doc, f"annotation {BROKER_CLASS_ANNOTATION} must be {RABBITMQ_BROKER_CLASS}, got {broker_class!r}")
    spec = _mapping(doc, doc.body.get("spec"), "spec", required=True)
    ref = _mapping(doc, spec.get("config"), "spec.config", required=True)
    if ref.get("kind") != "RabbitmqBrokerConfig" or ref.get("apiVersion") != RABBITMQ_BROKER_CONFIG_API:
        _fail(doc, f"spec.config must reference a {RABBITMQ_BROKER_CONFIG_API} RabbitmqBrokerConfig")
    config_name = _string(doc, ref.get("name"), "spec.config.name")
    config = configs.get(config_name)
    if config is None:
        _fail(doc, f"spec.config names RabbitmqBrokerConfig {config_name!r}, which is not in eventing/")
    config_spec = _mapping(config, config.body.get("spec"), "spec", required=True)
    queue_type = config_spec.get("queueType", "quorum")
    if queue_type not in ("quorum", "classic"):
        _fail(config, f"spec.queueType must be quorum or classic, got {queue_type!r}")
    return BrokerSpec(
        name=doc.name,
        delivery=_parse_delivery(doc, spec.get("delivery"), "spec.delivery"),
        queue_type="classic" if queue_type == "classic" else "quorum",
    )
