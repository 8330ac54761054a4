"""deploy/overlays/*: rendered by the real kustomize (kubectl's), every object valid against its schema, the
bases' objects all there, credentials only by secretKeyRef, K_SINK from SinkBindings, each overlay's settings."""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from eco2_tools.manifests import MANIFEST_DIRS, Document, ManifestError, Manifests, read_documents
from eco2_tools.manifests.documents import parse_documents
from eco2_tools.manifests.kustomize import render
from tests.manifests.schemas import schema_errors
from tests.support import ROOT

OVERLAYS_DIR = ROOT / "deploy" / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
SECRET = "eco2-secrets"
# Which Service gets which key from the Secret (deploy/components/secret-refs); False: referenced `optional`.
CREDENTIALS: dict[str, tuple[str | set[str], bool]] = {
    "REDIS_URL": ("*", True),
    "AMQP_URL": ({"gateway", "authz", "reward"}, True),
    "OPENAI_API_KEY": ({"vision", "answer", "chat"}, True),
    "DATABASE_URL": ({"persist", "gateway"}, True),
    # One of the two JWT keys is enough (HS256 or RS256): neither may be required.
    "ECO2_JWT_SECRET": ({"gateway", "authz"}, False),
    "ECO2_JWT_PUBLIC_KEY": ({"gateway", "authz"}, False),
    "ECO2_JWT_PREVIOUS_SECRET": ({"gateway", "authz"}, False),
    "ECO2_JWT_PREVIOUS_PUBLIC_KEY": ({"gateway", "authz"}, False),
    # persist reads the catalog's copy there to check a grant's character (eco2.persist.evidence).
    "ECO2_REDIS_CACHE_URL": ({"gateway", "authz", "reward", "persist", "blacklist-sync", "catalog-sync"}, False),
    "AWS_ACCESS_KEY_ID": ({"gateway", "vision", "chat"}, False),
    "AWS_SECRET_ACCESS_KEY": ({"gateway", "vision", "chat"}, False),
}
# What each overlay says: namespace, image, the gateway's min-scale.
EXPECTED = {
    "dev": ("eco2-dev", "dev.local/eco2/functions:dev", 1),
    "prod": ("eco2", "ghcr.io/eco2/functions:0.1.0", 3),
}

# Knative Serving's default `registries-skipping-tag-resolving` (ConfigMap config-deployment in knative-serving):
# an image of any other registry has its tag resolved to a digest there, so an image only loaded into the nodes
# (kind load, minikube image load) fails its revision.
KNATIVE_SKIPS_TAG_RESOLUTION = ("kind.local", "ko.local", "dev.local")

# What lives in the ingress gateway's namespace, to apply to its pods (deploy/components/edge-authz).
INGRESS_NAMESPACE = "istio-system"
INGRESS_NAMESPACE_KINDS = {"AuthorizationPolicy"}

Body = dict[str, Any]


def _require_kustomize() -> None:
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        message = "neither kubectl (it carries kustomize) nor kustomize is installed: the overlays cannot be rendered"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@cache
def rendered(overlay: str) -> tuple[Document, ...]:
    _require_kustomize()
    directory = OVERLAYS_DIR / overlay
    return tuple(parse_documents(directory / "kustomization.yaml", render(directory)))


def _services(overlay: str) -> list[Body]:
    """The Knative Services (not Kubernetes' own, such as the edge's authz-check)."""
    return [d.body for d in rendered(overlay) if d.kind == "Service" and d.api_version == "serving.knative.dev/v1"]


def _container(service: Body) -> Body:
    container: Body = service["spec"]["template"]["spec"]["containers"][0]
    return container


def test_there_are_overlays() -> None:
    assert set(OVERLAYS) == set(EXPECTED)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_its_schema(overlay: str) -> None:
    errors = {doc.label: schema_errors(doc.body) for doc in rendered(overlay)}
    assert {label: problems for label, problems in errors.items() if problems} == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_base_object_is_rendered_once_in_the_overlays_namespace(overlay: str) -> None:
    namespace = EXPECTED[overlay][0]
    base = [(d.kind, d.name) for directory in MANIFEST_DIRS for d in read_documents(ROOT / directory)]
    objects = [(d.kind, d.name) for d in rendered(overlay)]
    assert len(objects) == len(set(objects))
    assert set(base) <= set(objects)
    assert {"PingSource", "RabbitmqSource", "SinkBinding", "Broker", "Trigger"} <= {kind for kind, _ in objects}
    assert ("Namespace", namespace) in objects
    for doc in rendered(overlay):
        if doc.kind in INGRESS_NAMESPACE_KINDS:
            assert doc.metadata.get("namespace") == INGRESS_NAMESPACE, doc.label
        elif doc.kind != "Namespace":
            assert doc.metadata.get("namespace") == namespace, doc.label
        assert doc.metadata.get("labels", {}).get("app.kubernetes.io/part-of") == "eco2", doc.label
        assert doc.metadata["labels"].get("eco2.dev/environment") == overlay, doc.label


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_only_from_the_secret_by_reference(overlay: str) -> None:
    config = next(d.body for d in rendered(overlay) if d.kind == "ConfigMap" and d.name == "eco2-config")
    assert not CREDENTIALS.keys() & config.get("data", {}).keys(), "a credential in the ConfigMap"
    for service in _services(overlay):
        name = service["metadata"]["name"]
        env = {var["name"]: var for var in _container(service)["env"]}
        for variable, (services, required) in CREDENTIALS.items():
            if services == "*" or name in services:
                ref = {"name": SECRET, "key": variable} | ({} if required else {"optional": True})
                assert env[variable] == {"name": variable, "valueFrom": {"secretKeyRef": ref}}, (name, variable)
            else:
                assert variable not in env, (name, variable)


def test_dev_generates_its_secret_and_prod_commits_none() -> None:
    secrets = {o: [d.body for d in rendered(o) if d.kind == "Secret"] for o in OVERLAYS}
    assert secrets["prod"] == [], "production credentials are created out of band, never rendered from the repo"
    (dev,) = secrets["dev"]
    assert dev["metadata"]["name"] == SECRET, "a hashed name would not be rewritten in the Services' secretKeyRef"
    required = {key for key, (_services, needed) in CREDENTIALS.items() if needed}
    assert set(dev["data"]) == required | {"ECO2_JWT_SECRET"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k_sink_is_bound_not_written(overlay: str) -> None:
    for service in _services(overlay):
        assert "K_SINK" not in {var["name"] for var in _container(service)["env"]}
    bindings = {d.name: d.body["spec"] for d in rendered(overlay) if d.kind == "SinkBinding"}
    assert {b["subject"]["name"] for b in bindings.values()} == {"gateway", "replay"}
    assert all(b["sink"]["ref"]["kind"] == "Broker" for b in bindings.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_resources_and_gateway_scale(overlay: str) -> None:
    _namespace, image, gateway_min_scale = EXPECTED[overlay]
    for service in _services(overlay):
        container = _container(service)
        assert container["image"] == image
        assert {"requests", "limits"} <= container["resources"].keys(), service["metadata"]["name"]
    loaded = Manifests.load(OVERLAYS_DIR / overlay)
    assert loaded.services["gateway"].min_scale == gateway_min_scale


def test_the_dev_image_is_one_knative_does_not_look_up_in_a_registry() -> None:
    images = {_container(service)["image"] for service in _services("dev")}
    registries = {image.partition("/")[0] for image in images}
    assert registries <= set(KNATIVE_SKIPS_TAG_RESOLUTION), images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_loads_as_the_packs_manifests(overlay: str, tmp_path: Path) -> None:
    base = Manifests.load(ROOT)
    loaded = Manifests.load(OVERLAYS_DIR / overlay)
    assert loaded.services.keys() == base.services.keys()
    assert loaded.triggers == base.triggers, "an overlay changes no routing, retry or dead-lettering"
    assert loaded.broker == base.broker
    for name, service in loaded.services.items():
        assert service.command == base.services[name].command
    # The same objects rendered to a file beforehand load the same.
    rendered_file = tmp_path / f"{overlay}.yaml"
    rendered_file.write_text(render(OVERLAYS_DIR / overlay), encoding="utf-8")
    assert Manifests.load(rendered_file).services == loaded.services


def test_a_broken_overlay_is_a_manifest_error_with_kustomizes_message(tmp_path: Path) -> None:
    _require_kustomize()
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"missing\.yaml"):
        Manifests.load(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_function_runs_unprivileged_on_a_read_only_filesystem(overlay: str) -> None:
    for service in _services(overlay):
        context = _container(service)["securityContext"]
        assert context["runAsNonRoot"] is True, service["metadata"]["name"]
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}


def test_prod_lets_only_the_packs_senders_onto_the_broker() -> None:
    docs = rendered("prod")
    senders = {}
    for service in _services("prod"):
        env = {var["name"]: var.get("value") for var in _container(service)["env"]}
        if "ECO2_EVENT_TOKEN_FILE" in env:
            spec = service["spec"]["template"]["spec"]
            audiences = [
                s["serviceAccountToken"]["audience"] for v in spec["volumes"] for s in v["projected"]["sources"]
            ]
            senders[service["metadata"]["name"]] = (spec["serviceAccountName"], audiences)
    broker = "eventing.knative.dev/broker/eco2/eco2"  # the Broker's OIDC audience: /broker/<namespace>/<name>
    assert senders == {"gateway": ("eco2-sender", [broker]), "replay": ("eco2-sender", [broker])}
    policy = next(d.body["spec"] for d in docs if d.kind == "EventPolicy")
    assert policy["to"] == [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "eco2"}}]
    assert {"sub": "system:serviceaccount:eco2:eco2-sender"} in policy["from"]
    sources = {d.name for d in docs if d.kind == "RabbitmqSource"}
    assert {f["ref"]["name"] for f in policy["from"] if "ref" in f} == sources
    fence = next(d.body["spec"] for d in docs if d.kind == "NetworkPolicy" and d.name == "eco2-broker-ingress")
    assert fence["podSelector"]["matchLabels"]["eventing.knative.dev/brokerRole"] == "ingress"
    allowed = fence["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert sorted(allowed) == sorted(senders)
