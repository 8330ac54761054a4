"""What the benchmarks measure and print alike: rows of percentiles, Prometheus histogram windows, the table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rich.console import JustifyMethod
from rich.table import Table

Quantile = Literal["p50", "p90", "p99"]


@dataclass
class Row:
    """One measured quantity: times in seconds, memory in MB; `target` is compared with the `judged` quantile."""

    name: str
    n: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None
    target: float | None = None
    judged: Quantile = "p99"
    unit: str = "ms"  # how the table shows it: ms (values in seconds), s, or MB
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        value = getattr(self, self.judged)
        if self.target is None or value is None:
            return None
        return "PASS" if value <= self.target else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "values_in": "MB" if self.unit == "MB" else "seconds", "verdict": self.verdict}


def percentile(ascending: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    return ascending[max(1, math.ceil(q * len(ascending))) - 1]


def sample_row(name: str, samples: Sequence[float], **kwargs: Any) -> Row:
    values = sorted(samples)
    if not values:
        return Row(name, 0, **kwargs)
    return Row(
        name,
        len(values),
        p50=percentile(values, 0.50),
        p90=percentile(values, 0.90),
        p99=percentile(values, 0.99),
        mean=sum(values) / len(values),
        max=values[-1],
        **kwargs,
    )


@dataclass
class HistogramState:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, ending with +Inf
    total: float
    count: float

    def minus(self, earlier: HistogramState) -> HistogramState:
        before = dict(earlier.buckets)
        return HistogramState(
            [(le, c - before.get(le, 0.0)) for le, c in self.buckets],
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """As PromQL's histogram_quantile: linear interpolation inside the bucket of the q-th observation."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                if cumulative == below:
                    return le
                return lower + (le - lower) * (rank - below) / (cumulative - below)
            lower, below = le, cumulative
        return lower


def histogram_state(samples: Any, name: str, label: tuple[str, str]) -> HistogramState:
    """The histogram `name` for one label value, from prometheus_client metric families (parsed or collected)."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in samples:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.labels.get(label[0]) != label[1]:
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return HistogramState(sorted(buckets), total, count)


def histogram_row(name: str, state: HistogramState, note: str) -> Row:
    return Row(
        name,
        int(state.count),
        p50=state.quantile(0.50),
        p90=state.quantile(0.90),
        p99=state.quantile(0.99),
        mean=state.total / state.count if state.count else None,
        note=f"{note}, interpolated in the buckets",
        extra={"buckets": [["+Inf" if math.isinf(le) else le, c] for le, c in state.buckets]},
    )


def fmt(value: float | None, unit: str = "ms") -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "ms":
        return f"{value * 1000:.2f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def rows_table(title: str, rows: Sequence[Row], quantiles: Sequence[Quantile] = ("p50", "p99")) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    columns: list[tuple[str, JustifyMethod]] = [("measurement", "left"), ("n", "right")]
    columns += [(q, "right") for q in quantiles]
    columns += [("mean", "right"), ("max", "right"), ("target", "left"), ("", "left"), ("note", "left")]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row in rows:
        verdict = row.verdict
        table.add_row(
            row.name if row.name.startswith(" ") else f"[bold]{row.name}[/]",
            str(row.n),
            *(fmt(getattr(row, q), row.unit) for q in quantiles),
            fmt(row.mean, row.unit),
            fmt(row.max, row.unit),
            f"{row.judged} ≤ {fmt(row.target, row.unit)}" if row.target is not None else "",
            "" if verdict is None else f"[bold {'green' if verdict == 'PASS' else 'red'}]{verdict}[/]",
            row.note,
        )
    return table
