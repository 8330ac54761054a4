"""Every manifest of the pack loaded at once: the Services, Triggers, Broker and ConfigMaps, cross-checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eco2_tools.manifests import kustomize
from eco2_tools.manifests.documents import Document, ManifestError, parse_documents, read_documents, read_file
from eco2_tools.manifests.fields import validate
from eco2_tools.manifests.models import (
    BrokerConfigObject,
    BrokerObject,
    BrokerSpec,
    ConfigMapObject,
    DeliverySpec,
    ServiceSpec,
    TriggerSpec,
)
from eco2_tools.manifests.specs import EVENTING_API, RABBITMQ_BROKER_CONFIG_API, SERVING_API

__all__ = ["MANIFEST_DIRS", "Manifests"]

# The directories under the project root that hold manifests, in load order.
MANIFEST_DIRS: tuple[str, ...] = ("knative", "eventing")

# The kinds the pack models, by (apiVersion, kind); any other is kept in `Manifests.documents` only.
_SERVICE = (SERVING_API, "Service")
_TRIGGER = (EVENTING_API, "Trigger")
_BROKER = (EVENTING_API, "Broker")
_BROKER_CONFIG = (RABBITMQ_BROKER_CONFIG_API, "RabbitmqBrokerConfig")
_CONFIG_MAP = ("v1", "ConfigMap")
# A modelled kind at another version of its own group is refused (a typo, or an API the pack does not speak);
# the same kind name in another group is another kind (Kubernetes' own Service beside Knative's).
_MODELLED_KINDS = frozenset((api.rpartition("/")[0], kind) for api, kind in (_SERVICE, _TRIGGER, _BROKER))


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
        """Read the pack's objects from `root`, which is one of:

        - a checkout: every YAML document of `root/knative/*.yaml` and `root/eventing/*.yaml` (the bases, not
          their kustomizations);
        - an overlay (a directory with a kustomization, such as deploy/overlays/prod): what kustomize renders;
        - a file: an overlay rendered before (`kubectl kustomize deploy/overlays/prod > prod.yaml`).

        Kinds the pack does not model (PingSource, RabbitmqSource, SinkBinding, Secret, ...) are kept in
        `documents` only. Raises ManifestError naming the file and object on anything malformed, duplicated or
        unsupported.
        """
        documents = _read_all(root)
        by_kind = _group(documents)
        return cls(
            services={doc.name: validate(doc, ServiceSpec) for doc in by_kind[_SERVICE]},
            triggers={doc.name: validate(doc, TriggerSpec) for doc in by_kind[_TRIGGER]},
            broker=_broker(root, by_kind[_BROKER], by_kind[_BROKER_CONFIG]),
            config_maps={doc.name: dict(validate(doc, ConfigMapObject).data) for doc in by_kind[_CONFIG_MAP]},
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


def _read_all(root: Path) -> list[Document]:
    if root.is_file():
        return read_file(root)
    if kustomize.is_kustomization(root) and not (root / MANIFEST_DIRS[0]).is_dir():
        return parse_documents(root / "kustomization.yaml", kustomize.render(root))
    documents: list[Document] = []
    for directory in MANIFEST_DIRS:
        path = root / directory
        if not path.is_dir():
            raise ManifestError(path, "", "manifest directory not found")
        documents.extend(read_documents(path))
    return documents


def _group(documents: list[Document]) -> dict[tuple[str, str], list[Document]]:
    """The documents by (apiVersion, kind), each object once; a modelled kind at another apiVersion is refused."""
    groups: dict[tuple[str, str], list[Document]] = {
        key: [] for key in (_SERVICE, _TRIGGER, _BROKER, _BROKER_CONFIG, _CONFIG_MAP)
    }
    first_seen: dict[tuple[str, str, str], Document] = {}
    for doc in documents:
        if doc.identity in first_seen:
            doc.fail(f"defined twice (first in {first_seen[doc.identity].path})")
        first_seen[doc.identity] = doc
        key = (doc.api_version, doc.kind)
        if key in groups:
            groups[key].append(doc)
        elif (doc.api_version.rpartition("/")[0], doc.kind) in _MODELLED_KINDS:
            doc.fail(f"unsupported apiVersion {doc.api_version!r} for kind {doc.kind}")
    return groups


def _broker(root: Path, brokers: list[Document], configs: list[Document]) -> BrokerSpec:
    """The one Broker, with the queue type of the RabbitmqBrokerConfig it names."""
    if len(brokers) != 1:
        found = ", ".join(f"{d.path}: {d.label}" for d in brokers) or "none"
        raise ManifestError(root / "eventing", "", f"expected exactly one Broker, found {found}")
    doc = brokers[0]
    broker = validate(doc, BrokerObject)
    config_name = broker.spec.config.name
    config = next((c for c in configs if c.name == config_name), None)
    if config is None:
        doc.fail(f"spec.config names RabbitmqBrokerConfig {config_name!r}, which is not in eventing/")
    return BrokerSpec(
        name=doc.name,
        delivery=broker.spec.delivery,
        queue_type=validate(config, BrokerConfigObject).spec.queue_type,
    )
