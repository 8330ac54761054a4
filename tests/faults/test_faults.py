"""The CI-sized subset of the fault suite: a few dozen scans per case through the whole local pack.

The full run (200 scans per case, the broker and Redis cases too) is `python -m tests.faults`. The replay case
here takes about 45 s: every scan fails (retries 4, 8, 16 s apart), then `eco2 dlq replay` brings all to done.
"""

from __future__ import annotations

import pytest

from tests.faults.cases import CASES, run_case
from tests.support import REDIS_TEST_URL

CI_SCANS = 24


@pytest.mark.parametrize(
    "name", ["baseline", "kill-functions", "kill-runner", "duplicate-deliveries", "poison", "replay"]
)
async def test_no_accepted_scan_is_lost_or_duplicated(name: str) -> None:
    result = await run_case(CASES[name], CI_SCANS, REDIS_TEST_URL)
    assert result.lost == 0, result.notes
    assert result.problems == [], result.notes
    assert result.done + result.failed == CI_SCANS
    assert (result.duplicate_events, result.duplicate_rewards, result.lost_rewards) == (0, 0, 0)
    assert result.rewards > 0, "the run granted rewards, so the reward audit counted something"
    if name != "kill-functions":  # a process killed mid-call makes its retry call the model again
        assert result.done == CI_SCANS
