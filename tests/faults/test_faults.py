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


async def _run_provider_limit(name: str, scans: int) -> None:
    result = await run_case(CASES[name], scans, REDIS_TEST_URL)
    assert (result.lost, result.failed, result.done) == (0, 0, scans), result.notes
    assert result.problems == [], result.notes


# Until the shared model budget (issue 20's pods' side, built on another branch) lands, the pods call the
# limited stand-in as fast as they can and collect 429s: strict, so the marker goes once the budget makes it pass.
@pytest.mark.xfail(reason="needs the shared per-model budget in Redis (issue 20)", strict=True)
async def test_a_provider_limited_to_2_calls_a_second_is_waited_for_not_failed() -> None:
    await _run_provider_limit("provider-limit", CI_SCANS)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["provider-limit", "provider-limit-cut"])
async def test_200_scans_against_a_limited_provider_finish_within_its_floor(name: str) -> None:
    await _run_provider_limit(name, 200)
