"""Schema validation of the pack's objects: Knative kinds against the real CRDs' openAPIV3Schema (the
handbook's reference/knative-crds), core kinds with kubernetes-validate. Shared by tests/manifests (the bases)
and tests/deploy (the rendered overlays)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema.protocols import Validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The handbook beside the project root: ../shared/reference/knative-crds (not the project's own shared/).
DEFAULT_CRD_DIR = PROJECT_ROOT / ".." / "shared" / "reference" / "knative-crds"
# kubectl here is 1.32; kubernetes-validate ships schemas for 1.25 through 1.37.
KUBERNETES_VERSION = "1.32.0"

Body = dict[str, Any]


def canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def crd_dir() -> Path:
    if DEFAULT_CRD_DIR.is_dir():
        return DEFAULT_CRD_DIR.resolve()
    configured = os.environ.get("ECO2_CRD_DIR")
    if configured and Path(configured).is_dir():
        return Path(configured)
    pytest.fail(
        f"Knative CRD schemas not found at {DEFAULT_CRD_DIR.resolve()} (the handbook's "
        f"reference/knative-crds beside the project) nor in $ECO2_CRD_DIR={configured!r}; "
        "point ECO2_CRD_DIR at a copy of them"
    )


# Knative's admission webhooks reject these even though the CRD schema does not say so (the Trigger's spec
# has no `required` list at all). Added to the CRD schema, so a manifest the cluster would refuse fails here.
ADMISSION_RULES: dict[str, list[Body]] = {
    "Trigger": [
        {
            "required": ["spec"],
            "properties": {
                "spec": {
                    "required": ["subscriber"],
                    "anyOf": [
                        {"required": ["broker"], "properties": {"broker": {"minLength": 1}}},
                        {"required": ["brokerRef"]},
                    ],
                    "properties": {"subscriber": {"anyOf": [{"required": ["ref"]}, {"required": ["uri"]}]}},
                }
            },
        }
    ],
    "Service": [{"required": ["spec"], "properties": {"spec": {"required": ["template"]}}}],
    "Broker": [],
    "RabbitmqBrokerConfig": [{"required": ["spec"]}],
}

_STRING_MAP: Body = {"type": "object", "additionalProperties": {"type": "string"}}
# apiVersion, kind and metadata are checked loosely: the API server owns most of metadata.
_LOOSE_METADATA: Body = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}


def _structural(node: Body) -> Body:
    """A CRD openAPIV3Schema node as JSON Schema, the Kubernetes extensions given their API-server meaning.

    - nullable: null is allowed too.
    - x-kubernetes-int-or-string: an integer or a string.
    - x-kubernetes-preserve-unknown-fields: unknown fields allowed; everywhere else an unknown field is an
      error, as with `kubectl apply` (server-side field validation Strict) rather than silently pruned.
    - x-kubernetes-list-type map/set: kept, checked by the extra keyword of _validator_class.
    """
    out: Body = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _structural(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_structural(child) for child in value]
        elif key in (
            "description",
            "nullable",
            "x-kubernetes-int-or-string",
            "x-kubernetes-preserve-unknown-fields",
        ):
            continue
        else:
            out[key] = value
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    return out


def _list_type(
    validator: Any, list_type: str, instance: object, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[str] = set()
        for item in instance:
            if isinstance(item, dict):
                key = canonical({k: item.get(k) for k in keys})
                if key in seen:
                    yield jsonschema.ValidationError(f"duplicate entry for list-map key {key}")
                seen.add(key)
    elif list_type == "set":
        items = [canonical({"v": item}) for item in instance]
        if len(items) != len(set(items)):
            yield jsonschema.ValidationError("duplicate entries in a list-type set")


# The stubs leave extend() untyped; this is its documented signature for the one way it is called here.
_extend = cast(
    "Callable[[type[Validator], dict[str, Callable[..., Iterator[jsonschema.ValidationError]]]], type[Validator]]",
    jsonschema.validators.extend,
)
_validator_class = _extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})


def transcribed_crd(group: str, kind: str, version: str, spec: Body) -> Body:
    """A CRD the handbook's directory lacks, as the CRD file would state it: one served version whose schema is
    `spec` (status left out: the API server owns it)."""
    status: Body = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema: Body = {"type": "object", "properties": {"spec": spec, "status": status}}
    return {
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": group,
            "names": {"kind": kind},
            "versions": [{"name": version, "served": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


# Knative's SinkBinding CRD is not in the handbook's reference/knative-crds. Its spec is transcribed here, field
# for field, from the openAPIV3Schema of knative/eventing's config/core/resources/sinkbindings.yaml (status left
# out: the API server owns it); the admission webhook's own rule, a subject named or selected, is added below.
_OBJECT_REF: Body = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ("apiVersion", "kind", "name", "namespace")},
}
_LABEL_SELECTOR: Body = {
    "type": "object",
    "properties": {
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "matchLabels": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
SINKBINDING_CRD = transcribed_crd(
    "sources.knative.dev",
    "SinkBinding",
    "v1",
    {
        "type": "object",
        "properties": {
            "ceOverrides": {
                "type": "object",
                "properties": {
                    "extensions": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            },
            "sink": {
                "type": "object",
                "properties": {
                    "ref": _OBJECT_REF,
                    "uri": {"type": "string"},
                    "CACerts": {"type": "string"},
                },
            },
            "subject": {
                "type": "object",
                "properties": {**_OBJECT_REF["properties"], "selector": _LABEL_SELECTOR},
            },
        },
    },
)
ADMISSION_RULES["SinkBinding"] = [
    {
        "required": ["spec"],
        "properties": {
            "spec": {
                "required": ["sink", "subject"],
                "properties": {
                    "sink": {"anyOf": [{"required": ["ref"]}, {"required": ["uri"]}]},
                    "subject": {
                        "required": ["apiVersion", "kind"],
                        "oneOf": [{"required": ["name"]}, {"required": ["selector"]}],
                    },
                },
            }
        },
    }
]


# Nor is EventPolicy's: its spec transcribed from knative/eventing's config/core/resources/eventpolicy.yaml
# (v1alpha1; status left out). `to` takes a ref (no namespace: the policy's own) or a selector; `from` a ref or an
# OIDC subject (`sub`, a trailing * matches any suffix).
_POLICY_REF: Body = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ("apiVersion", "kind", "name", "namespace")},
}
EVENTPOLICY_CRD = transcribed_crd(
    "eventing.knative.dev",
    "EventPolicy",
    "v1alpha1",
    {
        "type": "object",
        "properties": {
            "from": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"ref": _POLICY_REF, "sub": {"type": "string"}},
                },
            },
            "to": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "ref": {
                            "type": "object",
                            "properties": {n: {"type": "string"} for n in ("apiVersion", "kind", "name")},
                        },
                        "selector": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                **_LABEL_SELECTOR["properties"],
                            },
                        },
                    },
                },
            },
        },
    },
)
# The webhook's rule: each `from` entry names a ref or a sub, each `to` entry a ref or a selector.
ADMISSION_RULES["EventPolicy"] = [
    {
        "properties": {
            "spec": {
                "properties": {
                    "from": {"items": {"oneOf": [{"required": ["ref"]}, {"required": ["sub"]}]}},
                    "to": {"items": {"oneOf": [{"required": ["ref"]}, {"required": ["selector"]}]}},
                }
            }
        }
    }
]


# Istio's CRDs are not in the handbook either. The parts the edge uses (deploy/components/edge-authz), transcribed
# from istio/api: AuthorizationPolicy's spec from security/v1beta1/authorization.proto (served as
# security.istio.io/v1; targetRef(s) and the `from`/`when` conditions' fields left out: the pack uses neither, so
# using one fails here until it is transcribed), and the mesh's extension provider from mesh/v1alpha1/config.proto
# (envoyExtAuthzHttp only), in an IstioOperator's meshConfig. Fields are the protos' JSON names; durations strings.
_STRINGS: Body = {"type": "array", "items": {"type": "string"}}
_OPERATION: Body = {
    "type": "object",
    "properties": {
        name: _STRINGS
        for name in ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
    },
}
AUTHORIZATIONPOLICY_CRD = transcribed_crd(
    "security.istio.io",
    "AuthorizationPolicy",
    "v1",
    {
        "type": "object",
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "action": {"type": "string", "enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
            "provider": {"type": "object", "properties": {"name": {"type": "string"}}},
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "to": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"operation": _OPERATION}},
                        },
                    },
                },
            },
        },
    },
)
# istiod's validation: CUSTOM names a provider and only CUSTOM does; an operation says what it matches.
ADMISSION_RULES["AuthorizationPolicy"] = [
    {
        "required": ["spec"],
        "properties": {
            "spec": {
                "if": {"properties": {"action": {"const": "CUSTOM"}}, "required": ["action"]},
                "then": {"required": ["provider"], "properties": {"provider": {"required": ["name"]}}},
                "else": {"not": {"required": ["provider"]}},
                "properties": {
                    "rules": {"items": {"properties": {"to": {"items": {"required": ["operation"]}}}}},
                },
            }
        },
    }
]
_EXT_AUTHZ_HTTP: Body = {
    "type": "object",
    "required": ["service", "port"],
    "properties": {
        "service": {"type": "string", "minLength": 1},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "timeout": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"},
        "pathPrefix": {"type": "string", "pattern": "^/"},
        "failOpen": {"type": "boolean"},
        "statusOnError": {"type": "string", "pattern": "^[1-5][0-9][0-9]$"},
        "includeRequestHeadersInCheck": _STRINGS,
        "includeAdditionalHeadersInCheck": {"type": "object", "additionalProperties": {"type": "string"}},
        "includeRequestBodyInCheck": {
            "type": "object",
            "properties": {
                "maxRequestBytes": {"type": "integer"},
                "allowPartialMessage": {"type": "boolean"},
                "packAsBytes": {"type": "boolean"},
            },
        },
        "headersToUpstreamOnAllow": _STRINGS,
        "headersToDownstreamOnAllow": _STRINGS,
        "headersToDownstreamOnDeny": _STRINGS,
    },
}
ISTIOOPERATOR_CRD = transcribed_crd(
    "install.istio.io",
    "IstioOperator",
    "v1alpha1",
    {
        "type": "object",
        "properties": {
            "meshConfig": {
                "type": "object",
                "properties": {
                    "extensionProviders": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "envoyExtAuthzHttp"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "envoyExtAuthzHttp": _EXT_AUTHZ_HTTP,
                            },
                        },
                    }
                },
            }
        },
    },
)


def _crds() -> Iterator[Body]:
    """Every CRD of the reference directory, then the transcribed ones."""
    for path in sorted(crd_dir().glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                yield crd
    yield from (SINKBINDING_CRD, EVENTPOLICY_CRD, AUTHORIZATIONPOLICY_CRD, ISTIOOPERATOR_CRD)


@cache
def crd_schemas() -> dict[tuple[str, str], Body]:
    """(apiVersion, kind) -> a JSON Schema for each served version of each CRD in the reference directory."""
    schemas: dict[tuple[str, str], Body] = {}
    for crd in _crds():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            api_version = f"{group}/{version['name']}"
            schema = _structural(version["schema"]["openAPIV3Schema"])
            properties = schema.setdefault("properties", {})
            properties["apiVersion"] = {"const": api_version}
            properties["kind"] = {"const": kind}
            properties["metadata"] = _LOOSE_METADATA
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            if ADMISSION_RULES.get(kind):
                schema["allOf"] = ADMISSION_RULES[kind]
            _validator_class.check_schema(schema)
            schemas[(api_version, kind)] = schema
    return schemas


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(map(str, error.absolute_path)) or "<root>"
    if error.context:  # anyOf/oneOf: say what each alternative missed, not the whole instance
        alternatives = sorted({sub.message for sub in error.context})
        return f"{where}: none of the alternatives holds: {'; '.join(alternatives)}"
    return f"{where}: {error.message}"


def schema_errors(body: Body) -> list[str]:
    """Why an object would be refused: Knative kinds against their CRD, core kinds via kubernetes-validate."""
    api_version, kind = str(body.get("apiVersion")), str(body.get("kind"))
    group = api_version.rpartition("/")[0]
    if group.endswith("knative.dev") or group.endswith("istio.io"):
        schema = crd_schemas().get((api_version, kind))
        if schema is None:
            return [f"no CRD in {crd_dir()} nor transcribed here serves {api_version} {kind}"]
        return sorted(_describe(e) for e in _validator_class(schema).iter_errors(body))
    if "." in group and not group.endswith(".k8s.io"):  # networking.k8s.io and the like are Kubernetes' own
        return [f"no schema known for {api_version} {kind}"]
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    return []
