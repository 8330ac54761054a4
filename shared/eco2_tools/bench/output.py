"""What `eco2 bench` shows and writes: the side-by-side table (rich), the JSON and the PNG chart."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from eco2_tools.bench.harness import json_default

CHARTED = (
    "zero-latency throughput",
    "zero-latency e2e p99",
    "CPU per scan (pipeline)",
    "seed latencies: e2e p99",
    "seed latencies: peak memory (RSS)",
    "idle memory (USS)",
)


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="eco2 bench: the pack beside the Celery baseline (same handlers)", title_justify="left")
    for column, justify in (("figure", "left"), ("unit", "left"), ("pack", "right"), ("Celery", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for column in ("pack ÷ Celery", "target", ""):
        table.add_column(column)
    for row in rows:
        ratio = row["pack_over_celery"]
        verdict = row["verdict"]
        table.add_row(
            row["figure"],
            row["unit"],
            _number(row["pack"]),
            _number(row["celery"]),
            "—" if ratio is None else f"{ratio:.2f}×",
            row["target"] or "",
            "" if verdict is None else f"[bold {'green' if verdict == 'PASS' else 'red'}]{verdict}[/]",
        )
    return table


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=json_default, ensure_ascii=False) + "\n")


def write_chart(rows: Sequence[Mapping[str, Any]], path: Path, subtitle: str) -> None:
    """One pair of bars (pack, Celery) per charted figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charted = [row for row in rows if row["figure"] in CHARTED]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for axis, row in zip(axes.flat, charted, strict=False):
        values = [row["pack"] or 0.0, row["celery"] or 0.0]
        bars = axis.bar(["pack", "Celery"], values, color=["#2a9d8f", "#e76f51"])
        axis.bar_label(bars, labels=[_number(row["pack"]), _number(row["celery"])])
        better = "higher" if row["better"] == "higher" else "lower"
        axis.set_title(f"{row['figure']}\n({row['unit']}, {better} is better)", fontsize=10)
        axis.margins(y=0.2)
    for axis in list(axes.flat)[len(charted) :]:
        axis.axis("off")
    figure.suptitle(f"eco2 bench — {subtitle}", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
