"""The web page in a real browser (Debian's chromium, headless, driven by playwright): sign in with a development
token, pick a generated sample photo, watch the answer stream in and the reward arrive, ask the chat; a screenshot
is kept (results/web/, git-ignored, and the test's tmp dir)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eco2_tools.local.runner import LocalPack
from eco2_tools.standin import samples
from eco2_tools.standin.images import sample_png

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parents[2] / "results" / "web"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
]

# Skipped on a developer's machine without chromium; never in CI (CI=true), where scripts/test.sh installs it.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="chromium is not installed (scripts/test.sh)"
)


async def wait_until(page: Any, expression: str, seconds: float) -> None:
    """Poll an expression through the debugger protocol: the page's CSP (no eval) refuses wait_for_function's
    in-page polling, and the test means to run the page under its real policy."""
    deadline = time.monotonic() + seconds
    while not await page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        await asyncio.sleep(0.05)


async def test_the_page_uploads_a_photo_and_shows_the_streamed_answer_and_the_reward(
    start_pack: Callable[..., Any], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    pack: LocalPack = await start_pack(
        None,
        standin=True,
        storage=True,
        extra_env={"STANDIN_LATENCY_SCALE": "0.2", "ECO2_ENV": "development", "ECO2_JWT_SECRET": ""},
    )
    sample = samples.by_name("clear_pet_bottle")
    assert sample is not None
    photo = tmp_path / "bottle.png"
    photo.write_bytes(sample_png(sample))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            page = await browser.new_page(locale="ko-KR", viewport={"width": 390, "height": 844})
            await page.goto(f"http://127.0.0.1:{pack.options.gateway_port}/app")
            assert await page.locator("#dev-token").inner_text() == "개발용 토큰 받기"
            await page.click("#dev-token")
            await wait_until(page, "document.getElementById('who').textContent.length > 0", 30)
            assert await page.evaluate("localStorage.getItem('eco2.token')") is None
            assert await page.evaluate("sessionStorage.getItem('eco2.token')")
            await page.set_input_files("#photo", str(photo))
            ended = "['done', 'failed', 'cancelled', 'error'].includes(document.body.dataset.scan)"
            await wait_until(page, ended, 60)
            outcome = await page.evaluate("document.body.dataset.scan")
            problem = await page.locator("#error").inner_text()
            answer = await page.locator("#answer").inner_text()
            deltas = int(await page.locator("#answer").get_attribute("data-deltas") or "0")
            reward = await page.locator("#reward").inner_text()
            collection = await page.locator("#characters").inner_text()
            stages = await page.locator("#stages li.done").count()
            await page.fill("#chat-input", "페트병 뚜껑은 어떻게 버려요?")
            await page.click("#chat-form button")
            await page.wait_for_selector(".msg.bot[data-done]", timeout=60_000)
            chat_state = await page.locator(".msg.bot").last.get_attribute("data-done")
            chat_reply = await page.locator(".msg.bot").last.inner_text()
            shot = tmp_path / "app.png"
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, RESULTS / "app.png")
    assert outcome == "done", problem
    assert deltas >= 2, "the answer arrived in pieces"
    assert answer.startswith("(stand-in)")
    assert "페티" in reward
    assert "페티" in collection
    assert stages == 6
    assert shot.stat().st_size > 10_000
    assert chat_state == "done", chat_reply
    assert chat_reply.startswith("(stand-in)")
