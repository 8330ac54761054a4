"""`python -m tests.faults [--scans N] [--case NAME ...]`: run the fault cases, print the table, write the report.

The report goes to docs/faults.md (linked from the README) and results/faults.json. The run uses the machine's
Redis (DB 15 unless ECO2_FAULT_REDIS_URL says otherwise) and RabbitMQ; the broker and Redis cases stop and pause
those servers for seconds, so run it on a machine nobody else is testing on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time

from rich.console import Console
from rich.table import Table

from tests.faults.cases import CASES, SLOW_CASES, run_case
from tests.faults.scans import Audit
from tests.support import ROOT

REDIS_URL = os.environ.get("ECO2_FAULT_REDIS_URL", "redis://127.0.0.1:6379/15")


def table(audits: list[Audit]) -> Table:
    rows = [a.row() for a in audits]
    out = Table(title="Fault suite: every accepted scan audited")
    for column in rows[0]:
        out.add_column(column, justify="left" if column == "case" else "right")
    for row in rows:
        out.add_row(*(str(v) for v in row.values()))
    return out


def markdown(audits: list[Audit], scans: int) -> str:
    rows = [a.row() for a in audits]
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row.values()) + " |\n" for row in rows)
    notes = "".join(f"- **{a.case}**: {'; '.join(a.notes) or 'no fault notes'}\n" for a in audits)
    skipped = sorted(CASES.keys() - {a.case for a in audits})
    rerun = "".join(f" --case {a.case}" for a in audits) + " --report" if skipped else ""
    if skipped:
        notes += f"- not in this run: {', '.join(skipped)}\n"
    return (
        "# Fault suite report\n\n"
        f"Rerun: `.venv/bin/python -m tests.faults --scans {scans}{rerun}` "
        "(all cases, 200 scans each: about 6 minutes on a 2-core machine).\n"
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} cores), {scans} scans per case through the gateway of the whole local pack.\n"
        "Retries in these runs are spaced at most PT2S (model stages 4, 8, 16 s instead of the shipped 60, 120, "
        "240 s; rules and reward as shipped, PT1S), model budgets 10 s.\n\n"
        + head
        + body
        + "\n"
        + notes
        + "\n**lost** = accepted (or never accepted) scans that did not end, or ended failed without a reason; "
        "**duplicate events** = a (stage, status) on a job's SSE stream twice within one run of the job (a "
        "replay's reopen starts another); **problems** = the case's own checks that failed (in its notes); "
        "**duplicate rewards** = "
        "`eco2.reward.granted` seen on the broker more than once for one reward id; **lost rewards** = a reward id "
        "a finished job earned that never reached the broker. Model calls per job count what the "
        "stand-in saw since its last start (the kill-runner case restarts it).\n"
    )


async def main(scans: int, names: list[str], report: bool = False) -> int:
    console = Console(width=180)
    audits: list[Audit] = []
    for name in names:
        console.print(f"[bold]{name}[/]: {scans} scans …")
        audits.append(await run_case(CASES[name], scans, REDIS_URL))
        console.print(table(audits[-1:]))
    console.print(table(audits))
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "faults.json").write_text(json.dumps([a.row() | {"notes": a.notes} for a in audits], indent=2))
    if set(names) >= CASES.keys() - SLOW_CASES or report:
        (ROOT / "docs" / "faults.md").write_text(markdown(audits, scans))
    return 0 if all(a.ok for a in audits) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(CASES),
        help=f"run only these (repeatable); {', '.join(sorted(SLOW_CASES))} run only when named",
    )
    parser.add_argument("--report", action="store_true", help="write docs/faults.md even for some of the cases")
    args = parser.parse_args()
    default = [name for name in CASES if name not in SLOW_CASES]
    sys.exit(asyncio.run(main(args.scans, args.case or default, args.report)))
