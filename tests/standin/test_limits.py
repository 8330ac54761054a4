"""The stand-in's provider limits: rolling windows, calls in flight, the 429 body and headers, run-time changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from eco2.env import SettingsError
from eco2_tools.standin import StandinConfig
from eco2_tools.standin.limits import ProviderLimits, Window, duration, request_window
from eco2_tools.standin.server import create_app
from eco2_tools.standin.shapes import ApiError

BASE = "http://standin.test"
CHAT = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(limits: ProviderLimits, tokens: int = 1) -> ApiError:
    with pytest.raises(ApiError) as caught:
        limits.admit(tokens)
    return caught.value


def test_durations_are_written_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.25, 1.0, 1.2, 59.0, 360.0, 61.5)] == ["250ms", "1s", "2s", "59s", "6m0s", "1m2s"]


def test_the_tighter_request_limit_wins_and_fractional_rates_widen_the_window() -> None:
    assert request_window(0, 0) is None
    assert request_window(2, 0) == Window(2, 1.0)
    assert request_window(0.5, 0) == Window(1, 2.0)
    assert request_window(2, 60) == Window(60, 60.0)
    assert request_window(2, 600) == Window(2, 1.0)


def test_two_requests_per_second_is_a_rolling_window() -> None:
    clock = Clock()
    limits = ProviderLimits(requests_per_second=2, clock=clock)
    limits.admit(1)
    clock.now += 0.5
    limits.admit(1)
    error = refusal(limits)
    assert error.status == 429
    assert error.body() == {
        "error": {
            "message": "Rate limit reached for requests (stand-in). Please try again in 500ms.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert error.headers["retry-after-ms"] == "500"
    assert error.headers["retry-after"] == "1"
    assert error.headers["x-ratelimit-limit-requests"] == "2"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "1s"
    clock.now += 0.5
    limits.admit(1)  # the first call left the window; a fixed bucket would have allowed a burst instead


def test_tokens_per_minute_refuse_with_type_tokens() -> None:
    clock = Clock()
    limits = ProviderLimits(tokens_per_minute=100, clock=clock)
    limits.admit(60)
    error = refusal(limits, 50)
    assert error.body()["error"]["type"] == "tokens"
    assert error.headers["x-ratelimit-remaining-tokens"] == "40"
    assert error.headers["retry-after"] == "60"
    limits.admit(40)
    clock.now += 60
    limits.admit(100)


def test_calls_in_flight_are_capped_until_one_is_released() -> None:
    limits = ProviderLimits(max_concurrent=1)
    limits.admit(1)
    assert "concurrent" in refusal(limits).message
    limits.release()
    limits.admit(1)


def test_a_run_time_change_keeps_what_was_already_counted() -> None:
    clock = Clock()
    limits = ProviderLimits(requests_per_second=2, clock=clock)
    limits.admit(1)
    limits.configure(0.5, 0, 0, 0)
    assert refusal(limits).headers["retry-after-ms"] == "2000"
    clock.now += 2
    limits.admit(1)
    limits.configure(0, 0, 0, 0)
    for _ in range(100):
        limits.admit(1)
    assert limits.headers() == {}


def test_limits_come_from_the_environment_and_are_off_by_default() -> None:
    assert StandinConfig.from_env({}).requests_per_second == 0
    config = StandinConfig.from_env(
        {
            "STANDIN_REQUESTS_PER_SECOND": "2",
            "STANDIN_REQUESTS_PER_MINUTE": "100",
            "STANDIN_TOKENS_PER_MINUTE": "5000",
            "STANDIN_MAX_CONCURRENT": "4",
        }
    )
    assert (config.requests_per_second, config.requests_per_minute) == (2.0, 100)
    assert (config.tokens_per_minute, config.max_concurrent) == (5000, 4)
    with pytest.raises(SettingsError, match="STANDIN_REQUESTS_PER_SECOND"):
        StandinConfig.from_env({"STANDIN_REQUESTS_PER_SECOND": "-1"})


async def started(config: StandinConfig) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield app, http


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for _, http in started(StandinConfig(latency_scale=0.0, requests_per_second=2)):
        yield http


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get("/v1/standin/stats")).json()
    return result


async def test_every_reply_carries_the_rate_limit_headers_and_the_third_call_gets_429(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith("Rate limit reached for requests")
    assert refused.headers["x-eco2-standin"] == "true"
    assert int(refused.headers["retry-after-ms"]) > 0
    counted = await stats(client)
    assert (counted["calls"]["other"], counted["rate_limited"], counted["faults_injected"]) == (3, 1, 0)


async def test_the_limit_is_changed_at_run_time_and_reset_refills_it(client: httpx.AsyncClient) -> None:
    changed = await client.post("/v1/standin/config", json={"requests_per_second": 0.5})
    assert changed.status_code == 200
    assert changed.json()["requests_per_second"] == 0.5
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 429
    assert (await client.post("/v1/standin/reset")).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    bad = await client.post("/v1/standin/config", json={"max_concurrent": -1})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_config"
    off = await client.post("/v1/standin/config", json={"requests_per_second": 0})
    assert off.status_code == 200
    answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert "x-ratelimit-limit-requests" not in answers[-1].headers


async def test_the_peak_of_calls_in_flight_is_counted_and_capped() -> None:
    config = StandinConfig(vision_latency=0.0, answer_latency=0.3, max_concurrent=2)
    async for _, http in started(config):
        replies = await asyncio.gather(*(http.post("/v1/chat/completions", json=CHAT) for _ in range(3)))
        assert sorted(r.status_code for r in replies) == [200, 200, 429]
        counted = await stats(http)
        assert (counted["peak_in_flight"], counted["in_flight"], counted["rate_limited"]) == (2, 0, 1)


async def test_a_streamed_call_stays_in_flight_until_its_stream_ends() -> None:
    config = StandinConfig(latency_scale=0.0, max_concurrent=1)
    async for _, http in started(config):
        for _ in range(2):
            async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
                assert streamed.status_code == 200
                assert "[DONE]" in (await streamed.aread()).decode()
        assert (await stats(http))["in_flight"] == 0
