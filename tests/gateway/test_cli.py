"""`eco2 token` and `eco2 scan`: a dev token, and a scan followed live to its answer (exit code = outcome)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import jwt
import pytest
from typer.testing import CliRunner

from eco2.jobs import JobStatus, JobStore, Stage
from eco2_tools.gateway_cli import app
from tests.gateway.support import PUBLIC_IMAGE, SECRET, RecordingSink, metric, token
from tests.support import Child, wait_for

RESULT = {
    "pipeline_result": {
        "classification": {
            "major_category": "재활용폐기물",
            "middle_category": "무색페트병",
            "minor_category": "생수병",
        },
        "disposal_rules": {"middle_category": "무색페트병"},
        "final_answer": {
            "disposal_steps": ["내용물을 비워요", "라벨을 떼요"],
            "insufficiencies": [],
            "user_answer": "잘 분리배출했어요!",
        },
    },
    "reward": {"character_id": "pet", "name": "페티", "middle_category": "무색페트병"},
    "reward_reason": "granted",
}


def test_token_prints_a_token_the_gateway_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECO2_JWT_SECRET", SECRET)
    result = CliRunner().invoke(app, ["token", "--user", "alice", "--ttl", "120", "--vip"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"], audience="eco2", issuer="eco2")
    assert claims["sub"] == "alice"
    assert claims["priority"] == "vip"
    assert claims["exp"] - claims["iat"] == 120


def test_token_without_a_secret_outside_development_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECO2_JWT_SECRET", raising=False)
    monkeypatch.setenv("ECO2_ENV", "production")
    result = CliRunner().invoke(app, ["token"])
    assert result.exit_code == 2
    assert "ECO2_JWT_SECRET" in result.output


def test_scan_refuses_a_local_file_with_a_clear_message() -> None:
    result = CliRunner().invoke(app, ["scan", __file__, "--token", "x"])
    assert result.exit_code == 2
    assert "only http(s) image URLs" in result.output


@pytest.mark.parametrize("outcome", ["done", "failed"])
async def test_scan_follows_the_job_and_prints_the_answer(
    live_gateway: Child, sink: RecordingSink, store: JobStore, outcome: str
) -> None:
    args = ["scan", PUBLIC_IMAGE, "--text", "생수병", "--gateway", live_gateway.url, "--token", token("cli")]
    running = asyncio.create_task(asyncio.to_thread(CliRunner().invoke, app, args))
    received = await wait_for(lambda: asyncio.sleep(0, sink.events() or None), what="the scan to reach K_SINK")
    job_id = received[0].event["subject"]
    await wait_for(lambda: _streaming(live_gateway), what="the CLI to follow the stream")
    for stage in (Stage.VISION, Stage.RULE, Stage.ANSWER, Stage.REWARD):
        await store.transition(job_id, "cli", stage, JobStatus.RUNNING, message=f"{stage.value} 완료")
    if outcome == "done":
        await store.transition(
            job_id, "cli", Stage.DONE, JobStatus.DONE, message="완료되었어요", fields={"result": json.dumps(RESULT)}
        )
    else:
        error = {"code": "model_unavailable", "message": "the model did not answer"}
        await store.transition(
            job_id, "cli", Stage.REWARD, JobStatus.FAILED, message="실패했어요", fields={"error": json.dumps(error)}
        )
    async with asyncio.timeout(30):
        result = await running
    if outcome == "done":
        assert result.exit_code == 0, result.output
        for text in ("라벨을 떼요", "잘 분리배출했어요!", "페티", "무색페트병"):
            assert text in result.output
    else:
        assert result.exit_code == 1, result.output
        assert "model_unavailable" in result.output


async def _streaming(gateway: Child) -> bool:
    return await metric(gateway, "eco2_gateway_sse_clients") == 1


def test_the_cli_and_the_token_module_import_neither_the_server_nor_the_crypto() -> None:
    """`eco2 token` / `eco2 scan` load no gateway server, Redis client or JWT library until they need one."""
    heavy = ("jwt", "cryptography", "redis", "aiohttp", "starlette", "eco2.functions.gateway", "eco2.gateway.auth")
    modules = "eco2_tools.gateway_cli, eco2.gateway.tokens"
    probe = f"import sys, {modules}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_the_server_imports_the_crypto_only_when_it_checks_tokens() -> None:
    # (redis-py imports the bare `cryptography` package to see whether it is there; the cost is in hazmat.)
    heavy = ("jwt", "cryptography.hazmat")
    probe = f"import sys, eco2.functions.gateway\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
