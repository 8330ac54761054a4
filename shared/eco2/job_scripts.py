"""The job store's Redis scripts, composed from the `.lua` files of eco2.lua: each state change is one script.

A script that tests for an ended job calls `ended(status)`, defined ahead of it from the job's ended statuses
(they live in one place: eco2.jobs.TERMINAL_STATUSES). The checkpoint-and-transition script is the stage's whole
write (eco2.stage_work): its output stored, its last streamed pieces, and its transition, in one step.
"""

from __future__ import annotations

from collections.abc import Iterable

from eco2.lua import source


def _compose(terminal: Iterable[str], *names: str) -> str:
    tests = " or ".join(f"status == '{status}'" for status in sorted(terminal))
    prelude = f"local function ended(status) return {tests} end\n"
    return prelude + "".join(source(name) for name in names)


def transition_script(terminal: Iterable[str]) -> str:
    """One transition (job_transition.lua says its keys and arguments)."""
    return _compose(terminal, "job_transition_args", "job_transition")


def delta_script(terminal: Iterable[str]) -> str:
    """One or more streamed pieces of text (job_delta.lua)."""
    return _compose(terminal, "job_append_deltas", "job_delta")


def begin_script(terminal: Iterable[str]) -> str:
    """The start of a stage in one round trip (stage_begin.lua)."""
    return _compose(terminal, "stage_begin")


# A stage's output stored unless one is (first writer wins); every caller gets the stored one.
CHECKPOINT = source("checkpoint_store") + "return stored\n"


def checkpoint_transition_script(terminal: Iterable[str]) -> str:
    """A stage's output stored (CHECKPOINT) and its transition recorded in one step: one round trip for both, and
    for the last pieces of its streamed text, appended just before the transition.

    KEYS: checkpoints hash, lease, then the transition's keys. ARGV: CHECKPOINT's four; the number of pieces, the
    pieces ((index, data json) pairs, as the delta script takes them; closed by the transition's own mark); then
    the transition's. Returns {'other', stored json} when another delivery's output was stored first (its
    transition is then the caller's to record, from that output), else the transition's reply.
    """
    return _compose(terminal, "job_append_deltas", "checkpoint_store", "checkpoint_then", "job_transition")


RELEASE = source("lease_release")
REOPEN = source("job_reopen")
