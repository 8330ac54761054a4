"""The prod overlay's edge (deploy/components/edge-authz) and both overlays' NetworkPolicies
(deploy/components/network-policy): valid against their schemas, the edge saying what the local runner's edge does,
and every function's pods open to exactly who the design sends them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from eco2_tools.local.edge import (
    CHECK_HEADERS,
    CHECK_PATH_PREFIX,
    STATUS_ON_ERROR,
    UNCHECKED_PATHS,
    UPSTREAM_HEADERS,
)
from tests.deploy.test_overlays import OVERLAYS, rendered
from tests.manifests.schemas import schema_errors
from tests.support import ROOT

Body = dict[str, Any]
MESH_CONFIG = ROOT / "deploy" / "components" / "edge-authz" / "istio-mesh.yaml"
DISPATCHER = {"eventing.knative.dev/broker": "eco2", "eventing.knative.dev/brokerRole": "dispatcher"}
INGRESS_GATEWAY = ("istio-system", {"istio": "ingressgateway"})
ACTIVATOR = ("knative-serving", {"app": "activator"})
QUEUE_PROXY_PORTS = {8012, 8013, 8112}


def _objects(overlay: str, kind: str) -> dict[str, Body]:
    return {d.name: d.body for d in rendered(overlay) if d.kind == kind}


def _mesh() -> Body:
    (document,) = yaml.safe_load_all(MESH_CONFIG.read_text(encoding="utf-8"))
    body: Body = document
    return body


def _provider() -> Body:
    (provider,) = _mesh()["spec"]["meshConfig"]["extensionProviders"]
    body: Body = provider
    return body


# --- the edge ------------------------------------------------------------------------------------------------


def test_the_mesh_config_passes_its_schema() -> None:
    assert schema_errors(_mesh()) == []


def test_prod_asks_authz_for_the_gateways_host_but_its_open_paths() -> None:
    (policy,) = _objects("prod", "AuthorizationPolicy").values()
    assert policy["metadata"]["namespace"] == "istio-system"
    spec = policy["spec"]
    assert spec["selector"] == {"matchLabels": INGRESS_GATEWAY[1]}
    assert spec["action"] == "CUSTOM"
    assert spec["provider"] == {"name": _provider()["name"]}
    (rule,) = spec["rules"]
    (target,) = rule["to"]
    assert target["operation"]["hosts"] == ["gateway.eco2.*"]
    assert tuple(target["operation"]["notPaths"]) == UNCHECKED_PATHS, "the runner's edge checks the same paths"
    assert set(target["operation"]) == {"hosts", "notPaths"}


def test_the_provider_reaches_authzs_pods_and_speaks_as_the_runners_edge() -> None:
    http = _provider()["envoyExtAuthzHttp"]
    check = _objects("prod", "Service")["authz-check"]
    assert check["apiVersion"] == "v1"
    assert http["service"] == f"authz-check.{check['metadata']['namespace']}.svc.cluster.local"
    (port,) = check["spec"]["ports"]
    assert http["port"] == port["port"]
    assert port["targetPort"] == 8012, "queue-proxy: Knative counts the checks for authz's autoscaling"
    assert check["spec"]["selector"] == {"serving.knative.dev/service": "authz"}
    assert http["pathPrefix"] == CHECK_PATH_PREFIX
    assert http["failOpen"] is False
    assert int(http["statusOnError"]) == STATUS_ON_ERROR
    assert tuple(http["headersToUpstreamOnAllow"]) == UPSTREAM_HEADERS
    assert {"authorization", *http["includeRequestHeadersInCheck"], "host"} == set(CHECK_HEADERS)


def test_authz_never_scales_to_zero_where_the_check_service_selects_its_pods() -> None:
    for service in _objects("prod", "Service").values():
        if service["metadata"]["name"] == "authz" and service["apiVersion"] == "serving.knative.dev/v1":
            annotations = service["spec"]["template"]["metadata"]["annotations"]
            assert int(annotations["autoscaling.knative.dev/min-scale"]) >= 1


def test_dev_has_no_edge_objects() -> None:
    assert _objects("dev", "AuthorizationPolicy") == {}
    assert "authz-check" not in _objects("dev", "Service")


def _broken(body: Body, path: tuple[str | int, ...], value: object) -> Body:
    out = copy.deepcopy(body)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("spec", "provider"), None),  # CUSTOM without a provider
        (("spec", "action"), "ALLOW"),  # a provider on a non-CUSTOM policy
        (("spec", "action"), "EXTERNAL"),
        (("spec", "rules", 0, "to", 0, "operation", "notPath"), ["/"]),  # a misspelt field
        (("spec", "rules", 0, "to", 0, "operation", "notPaths"), "/healthz"),  # not a list
    ],
)
def test_the_authorizationpolicy_schema_refuses_what_istiod_would(change: tuple[str | int, ...], value: object) -> None:
    (policy,) = _objects("prod", "AuthorizationPolicy").values()
    assert schema_errors(policy) == []
    assert schema_errors(_broken(policy, change, value)) != []


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", None), ("port", "80"), ("timeout", "1 second"), ("statusOnError", "forbidden"), ("failClosed", True)],
)
def test_the_mesh_schema_refuses_a_broken_provider(field: str, value: object) -> None:
    path = ("spec", "meshConfig", "extensionProviders", 0, "envoyExtAuthzHttp", field)
    assert schema_errors(_broken(_mesh(), path, value)) != []


# --- the fences ----------------------------------------------------------------------------------------------


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics, for the operators the pack uses."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator not in ("In", "Exists"):
            raise AssertionError(f"operator {operator} not modelled here")
    return True


def _pod_labels(service: Body) -> dict[str, str]:
    """The labels Knative gives a Service's pods: its template's and its own name."""
    return {
        **service["spec"]["template"]["metadata"]["labels"],
        "serving.knative.dev/service": service["metadata"]["name"],
    }


def _admits(policy: Body, namespace: str, peer: tuple[str | None, Mapping[str, str]], port: int) -> bool:
    """Whether `policy` lets a pod labelled `peer[1]` in namespace `peer[0]` (None: the policy's own) connect on
    `port`."""
    peer_namespace, peer_labels = peer
    for rule in policy["spec"].get("ingress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for source in rule.get("from", [{}]):
            if "namespaceSelector" in source:
                names = {"kubernetes.io/metadata.name": peer_namespace or namespace}
                if not _selects(source["namespaceSelector"], names):
                    continue
            elif (peer_namespace or namespace) != namespace:
                continue
            if _selects(source.get("podSelector", {}), peer_labels):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_fence_passes_its_schema_and_every_function_is_fenced(overlay: str) -> None:
    policies = _objects(overlay, "NetworkPolicy")
    assert all(schema_errors(policy) == [] for policy in policies.values())
    traffic = {
        name: p for name, p in policies.items() if name in ("eco2-gateway", "eco2-authz", "eco2-event-functions")
    }
    for service in (s for s in _objects(overlay, "Service").values() if s["apiVersion"] == "serving.knative.dev/v1"):
        labels = _pod_labels(service)
        fencing = [name for name, policy in traffic.items() if _selects(policy["spec"]["podSelector"], labels)]
        assert len(fencing) == 1, (service["metadata"]["name"], fencing)
        assert _selects(policies["eco2-functions-metrics"]["spec"]["podSelector"], labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_and_authz_are_reached_only_through_the_ingress(overlay: str) -> None:
    policies = _objects(overlay, "NetworkPolicy")
    for name in ("eco2-gateway", "eco2-authz"):
        policy = policies[name]
        namespace = policy["metadata"]["namespace"]
        for port in QUEUE_PROXY_PORTS:
            assert _admits(policy, namespace, INGRESS_GATEWAY, port), (name, port)
            assert _admits(policy, namespace, ACTIVATOR, port), (name, port)
        assert not _admits(policy, namespace, (None, DISPATCHER), 8012), "the Broker never calls it"
        assert not _admits(policy, namespace, (None, {"eco2.dev/function": "vision"}), 8012), "nor does a function"
        assert not _admits(policy, namespace, ("other", {"istio": "ingressgateway"}), 8012)
        assert not _admits(policy, namespace, INGRESS_GATEWAY, 8080), "the process's own port only via queue-proxy"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_stages_take_the_brokers_deliveries_and_nothing_from_each_other(overlay: str) -> None:
    policy = _objects(overlay, "NetworkPolicy")["eco2-event-functions"]
    namespace = policy["metadata"]["namespace"]
    assert _admits(policy, namespace, (None, DISPATCHER), 8012)
    assert _admits(policy, namespace, ("knative-eventing", {"app": "pingsource-mt-adapter"}), 8012)
    assert _admits(policy, namespace, ACTIVATOR, 8012)
    for function in ("gateway", "vision", "replay"):
        assert not _admits(policy, namespace, (None, {"eco2.dev/function": function}), 8012), function
    assert not _admits(policy, namespace, ("other", DISPATCHER), 8012), "another namespace's broker"
