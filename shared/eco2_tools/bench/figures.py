"""The figures `eco2 bench` reports: each runtime's measurements, then one row per figure with the pack's
number, the Celery baseline's, their ratio and the issue's target where it sets one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eco2_tools.bench.load import BurstResult
from eco2_tools.bench.procs import pipeline_label
from eco2_tools.bench.report import percentile

MODEL_FLOOR_SECONDS = 10.5  # the seed's 3.5 s vision + 7 s answer


def burst_summary(result: BurstResult) -> dict[str, Any]:
    e2e = sorted(result.e2e_seconds)
    return {
        "scans": result.scans,
        "done": result.done,
        "failed": result.failed,
        "unfinished": result.unfinished,
        "send_errors": result.send_errors,
        "completion_seconds": round(result.wall_seconds, 3),
        "throughput_scans_per_second": round(result.throughput, 2),
        "e2e_p50_seconds": round(percentile(e2e, 0.50), 4) if e2e else None,
        "e2e_p99_seconds": round(percentile(e2e, 0.99), 4) if e2e else None,
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "peak_rss_all_mb": round(result.peak_rss_all_mb, 1),
    }


def cpu_summary(spent: Mapping[str, float], scans: int) -> dict[str, Any]:
    per_scan = {label: round(seconds * 1000 / max(scans, 1), 2) for label, seconds in sorted(spent.items())}
    pipeline = sum(v for label, v in per_scan.items() if pipeline_label(label))
    shared = sum(v for label, v in per_scan.items() if label in ("rabbitmq", "redis"))
    return {
        "ms_per_scan_by_process": per_scan,
        "ms_per_scan_pipeline": round(pipeline, 2),
        "ms_per_scan_with_broker_and_redis": round(pipeline + shared, 2),
    }


def idle_summary(memory: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    pipeline = {label: dict(v) for label, v in memory.items() if pipeline_label(label)}
    return {
        "by_process": {label: {k: round(v, 1) for k, v in values.items()} for label, values in memory.items()},
        "pipeline_uss_mb": round(sum(v["uss"] for v in pipeline.values()), 1),
        "pipeline_pss_mb": round(sum(v["pss"] for v in pipeline.values()), 1),
    }


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    unit: str
    path: tuple[str, ...]  # where the number is in a runtime's results
    better: str  # "higher" or "lower"
    target: str = ""
    # The pass test on (pack, celery); None: no target for this figure.
    passes: Any = None


def _ratio_at_least(pack: float, celery: float, factor: float, floor: float) -> bool:
    return pack >= factor * celery and pack >= floor


FIGURES: tuple[Figure, ...] = (
    Figure(
        "zero-latency throughput",
        "scans/s",
        ("zero_latency", "throughput_scans_per_second"),
        "higher",
        "≥ 2× Celery and ≥ 60",
        lambda p, c: _ratio_at_least(p, c, 2.0, 60.0),
    ),
    Figure("zero-latency e2e p50", "s", ("zero_latency", "e2e_p50_seconds"), "lower"),
    Figure("zero-latency e2e p99", "s", ("zero_latency", "e2e_p99_seconds"), "lower"),
    Figure("CPU per scan (pipeline)", "ms", ("cpu", "ms_per_scan_pipeline"), "lower", "≤ 30", lambda p, _c: p <= 30.0),
    Figure("CPU per scan (+ RabbitMQ, Redis)", "ms", ("cpu", "ms_per_scan_with_broker_and_redis"), "lower"),
    Figure("seed latencies: completion", "s", ("seed", "completion_seconds"), "lower"),
    Figure("seed latencies: e2e p50", "s", ("seed", "e2e_p50_seconds"), "lower"),
    Figure("seed latencies: e2e p99", "s", ("seed", "e2e_p99_seconds"), "lower", "≤ 12", lambda p, _c: p <= 12.0),
    Figure(
        "seed latencies: p99 above the model floor",
        "s",
        ("seed", "overhead_p99_seconds"),
        "lower",
        "≤ 1.5",
        lambda p, _c: p <= 1.5,
    ),
    Figure("seed latencies: peak memory (RSS)", "MB", ("seed", "peak_rss_mb"), "lower"),
    Figure(
        "idle memory (USS)", "MB", ("idle", "pipeline_uss_mb"), "lower", "≤ 25% of Celery", lambda p, c: p <= 0.25 * c
    ),
    Figure("idle memory (PSS)", "MB", ("idle", "pipeline_pss_mb"), "lower"),
)


def value_at(results: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def compare(runtimes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure: pack, celery, pack/celery, the target and whether the pack met it."""
    rows = []
    for figure in FIGURES:
        pack, celery = (
            value_at(runtimes.get("pack", {}), figure.path),
            value_at(runtimes.get("celery", {}), figure.path),
        )
        ratio = pack / celery if pack is not None and celery not in (None, 0.0) else None
        verdict = None
        if figure.passes is not None and pack is not None and celery is not None:
            verdict = "PASS" if figure.passes(pack, celery) else "MISS"
        rows.append(
            {
                "figure": figure.name,
                "unit": figure.unit,
                "better": figure.better,
                "pack": pack,
                "celery": celery,
                "pack_over_celery": None if ratio is None else round(ratio, 3),
                "target": figure.target or None,
                "verdict": verdict,
            }
        )
    return rows


def with_overhead(seed: dict[str, Any], scale: float) -> dict[str, Any]:
    """The p99 above the model's own time (10.5 s at the seed's latencies, times `scale`)."""
    p99, floor = seed.get("e2e_p99_seconds"), MODEL_FLOOR_SECONDS * scale
    overhead = None if p99 is None else round(p99 - floor, 3)
    return {**seed, "model_floor_seconds": floor, "overhead_p99_seconds": overhead}
