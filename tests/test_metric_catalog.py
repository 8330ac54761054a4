"""The metrics catalog (eco2/metrics.json): every metrics object built from it, names that follow Prometheus's
conventions, and the table in docs/observability.md generated from it (like openapi.json's test)."""

from __future__ import annotations

import typing

import pytest

from eco2.functions.dead_letter import DeadLetterMetrics
from eco2.gateway.metrics import GatewayMetrics
from eco2.metric_catalog import DOC, EXPOSED_BY, MetricSet, catalog, document_with_table
from eco2.observability import FunctionMetrics
from eco2.persist.metrics import PersistMetrics
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.standin.stats import StandinMetrics

SETS: tuple[type[MetricSet], ...] = (
    FunctionMetrics,
    DeadLetterMetrics,
    PersistMetrics,
    GatewayMetrics,
    RunnerMetrics,
    StandinMetrics,
)


def test_every_set_of_the_catalog_has_its_metrics_object_and_a_place_in_the_docs() -> None:
    assert {s.set_name for s in SETS} == set(catalog()) == set(EXPOSED_BY)


@pytest.mark.parametrize("metric_set", SETS, ids=lambda s: s.set_name)
def test_a_metrics_object_declares_exactly_its_catalog_entries(metric_set: type[MetricSet]) -> None:
    hints = typing.get_type_hints(metric_set)
    declared = {name: hint for name, hint in hints.items() if name not in ("set_name", "registry")}
    entries = catalog()[metric_set.set_name]
    assert set(declared) == set(entries)
    for attribute, spec in entries.items():
        assert declared[attribute].__name__.lower() == spec.type, f"{spec.name} is a {spec.type}"


def test_names_follow_the_prometheus_conventions() -> None:
    specs = [spec for entries in catalog().values() for spec in entries.values()]
    assert len({spec.name for spec in specs}) == len(specs)
    for spec in specs:
        assert spec.name.startswith("eco2_"), spec.name
        assert spec.type in ("counter", "gauge", "histogram"), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert (spec.buckets is not None) == (spec.type == "histogram"), spec.name
        assert spec.help.strip(), spec.name


def test_the_metrics_table_in_the_docs_is_the_catalog() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == document_with_table(text), "run: .venv/bin/python -m eco2.metric_catalog --write"
