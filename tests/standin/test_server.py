"""The stand-in model server over ASGI: classification, answers, streaming, faults, stats, limits, markers."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from PIL import Image
from starlette.applications import Starlette

from eco2.env import SettingsError
from eco2.errors import ModelUnavailable, PoisonEvent, RateLimited
from eco2.events import Classification
from eco2.model import (
    ANSWER_SYSTEM_PROMPT,
    CLASSIFY_SYSTEM_PROMPT,
    JOB_HEADER,
    STAGE_HEADER,
    ModelClient,
)
from eco2.rules import RuleBook
from eco2_tools.standin import StandinConfig
from eco2_tools.standin.samples import SAMPLES, by_name, render
from eco2_tools.standin.server import WARNING_LINE, create_app

BASE = "http://standin.test"
MODEL = "gpt-4.1-mini"
CLASSIFY_FORMAT = {"type": "json_schema", "json_schema": {"name": "eco2_classification", "schema": {}}}
ANSWER_FORMAT = {"type": "json_schema", "json_schema": {"name": "eco2_answer", "schema": {}}}
PET_RULE = {
    "id": "recyclable-clear-pet",
    "major_category": "재활용폐기물",
    "middle_category": "무색페트병",
    "display_name": "무색 페트병",
    "recyclable": True,
    "steps": ["내용물을 비우고 헹궈 주세요.", "라벨을 떼 주세요.", "찌그러뜨려 뚜껑을 닫아 주세요."],
    "insufficient_tags": {"라벨_부착": "라벨을 아직 떼지 않았어요.", "내용물_있음": "내용물이 남아 있어요."},
    "common_mistakes": [],
}


async def started(config: StandinConfig, **options: Any) -> AsyncIterator[Starlette]:
    app = create_app(config, **options)
    # ASGITransport does not run the lifespan, so the fixture runs it around the test.
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    async for app in started(StandinConfig(latency_scale=0.0, hang_seconds=0.01)):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http


@pytest.fixture
async def sdk(app: Starlette) -> AsyncIterator[openai.AsyncOpenAI]:
    # The openai SDK's own HTTP client (httpx2), over the stand-in's ASGI app.
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    async with openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="standin", http_client=http, max_retries=0) as client:
        yield client


@pytest.fixture
async def model_client(sdk: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch) -> ModelClient:
    """The pack's own ModelClient, its SDK client swapped for one wired to the ASGI app (no network)."""
    client = ModelClient(base_url=f"{BASE}/v1", api_key="standin", timeout_seconds=30)
    await client.aclose()
    monkeypatch.setattr(client, "_client", sdk)
    return client


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def unknown_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (12, 34, 56)).save(buffer, format="PNG")
    return buffer.getvalue()


def classify_body(image_url: str, text: str = "이 물건은 어떻게 버려야 하나요?", **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image_url}}]
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": CLASSIFY_SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ],
        "response_format": CLASSIFY_FORMAT,
        **extra,
    }


def answer_body(document: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(document, ensure_ascii=False)},
        ],
        "response_format": ANSWER_FORMAT,
        **extra,
    }


def content_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["choices"][0]["message"]["content"])


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/standin/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def expected(name: str) -> Classification:
    sample = by_name(name)
    assert sample is not None
    return Classification(
        major_category=sample.major_category,
        middle_category=sample.middle_category,
        minor_category=sample.minor_category,
        situation_tags=sample.situation_tags,
    )


# Through the openai SDK, with the exact requests the pack's ModelClient sends.


async def test_every_sample_classifies_to_its_label_through_the_model_client(
    model_client: ModelClient,
) -> None:
    for sample in SAMPLES:
        for url in (data_url(render(sample)), f"{BASE}/samples/{sample.name}.png"):
            got = await model_client.classify(
                model=MODEL, image_url=url, user_input=None, system_prompt=CLASSIFY_SYSTEM_PROMPT, job_id="j1"
            )
            assert got == expected(sample.name), (sample.name, url[:40])


async def test_an_unknown_image_falls_back_to_the_users_text(model_client: ModelClient) -> None:
    rule = RuleBook.load().match_text("생수병")
    assert rule is not None
    assert (rule.major_category, rule.middle_category) == ("재활용폐기물", "무색페트병")
    got = await model_client.classify(
        model=MODEL,
        image_url=data_url(unknown_png()),
        user_input="생수병",
        system_prompt=CLASSIFY_SYSTEM_PROMPT,
        job_id="j1",
    )
    assert got == Classification(major_category="재활용폐기물", middle_category="무색페트병")
    unknown = await model_client.classify(
        model=MODEL,
        image_url=data_url(unknown_png()),
        user_input=None,
        system_prompt=CLASSIFY_SYSTEM_PROMPT,
        job_id="j1",
    )
    assert unknown == Classification(major_category="미분류")


async def test_the_answer_echoes_rule_steps_and_insufficiencies(model_client: ModelClient) -> None:
    classification = Classification(
        major_category="재활용폐기물",
        middle_category="무색페트병",
        minor_category="생수병",
        situation_tags=("뚜껑_있음", "라벨_부착"),
    )
    answer = await model_client.answer(
        model=MODEL,
        classification=classification,
        disposal_rules=PET_RULE,
        user_input="이거 어디에 버려요?",
        job_id="j1",
    )
    assert list(answer.disposal_steps) == PET_RULE["steps"]
    assert answer.insufficiencies == ("라벨을 아직 떼지 않았어요.",)
    assert "(stand-in)" in answer.user_answer
    assert "이거 어디에 버려요?" in answer.user_answer
    assert "무색 페트병" in answer.user_answer
    assert "내용물을 비우고 헹궈 주세요." in answer.user_answer
    assert "라벨을 아직 떼지 않았어요." in answer.user_answer
    again = await model_client.answer(
        model=MODEL,
        classification=classification,
        disposal_rules=PET_RULE,
        user_input="이거 어디에 버려요?",
        job_id="j2",
    )
    assert again == answer, "deterministic"


async def test_an_answer_without_a_rule_asks_for_another_photo(model_client: ModelClient) -> None:
    answer = await model_client.answer(
        model=MODEL,
        classification=Classification(major_category="미분류", situation_tags=("라벨_부착",)),
        disposal_rules=None,
        user_input=None,
        job_id="j1",
    )
    assert answer.disposal_steps
    assert "다시 찍어 주세요" in answer.disposal_steps[0]
    assert answer.insufficiencies == ()
    assert answer.user_answer.startswith("(stand-in)")


async def test_streaming_returns_the_same_content_as_a_single_reply(sdk: openai.AsyncOpenAI) -> None:
    requests = [
        classify_body(data_url(render(SAMPLES[3]))),
        answer_body(
            {
                "classification": {"major_category": "재활용폐기물", "situation_tags": ["라벨_부착"]},
                "disposal_rules": PET_RULE,
                "user_input": "생수병",
            }
        ),
        {"model": MODEL, "messages": [{"role": "user", "content": "안녕"}]},
    ]
    for body in requests:
        whole = await sdk.chat.completions.create(**body)
        assert whole.model == f"eco2-standin/{MODEL}"
        assert whole.system_fingerprint == "eco2-standin"
        stream = await sdk.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
        pieces: list[str] = []
        usage = None
        async for chunk in stream:
            assert chunk.model == f"eco2-standin/{MODEL}"
            if chunk.usage is not None:
                usage = chunk.usage
            pieces.extend(choice.delta.content or "" for choice in chunk.choices)
        assert "".join(pieces) == whole.choices[0].message.content
        assert len([p for p in pieces if p]) > 1, "split into several chunks"
        assert usage is not None
        assert whole.usage is not None
        assert usage.completion_tokens == whole.usage.completion_tokens


async def test_injected_faults_reach_the_model_client_and_are_counted(
    client: httpx.AsyncClient, model_client: ModelClient
) -> None:
    url = f"{BASE}/samples/clear_pet_bottle.png"

    async def classify() -> Classification:
        return await model_client.classify(
            model=MODEL, image_url=url, user_input=None, system_prompt=CLASSIFY_SYSTEM_PROMPT, job_id="jf"
        )

    assert (await client.post("/v1/standin/faults", json={"fail_next": 2, "status": 429})).status_code == 200
    for _ in range(2):
        with pytest.raises(RateLimited) as limited:
            await classify()
        assert limited.value.retry_after == 1.0
    await client.post("/v1/standin/faults", json={"fail_next": 1, "status": 500, "kind": "vision"})
    with pytest.raises(ModelUnavailable):
        await classify()
    assert await classify() == expected("clear_pet_bottle")
    result = await stats(client)
    assert result["calls"]["vision"] == 4
    assert result["faults_injected"] == 3
    assert result["by_job"]["jf"] == {"vision": 4}


async def test_a_bad_image_url_is_a_rejection_not_a_retry(model_client: ModelClient) -> None:
    with pytest.raises(PoisonEvent):
        await model_client.classify(
            model=MODEL,
            image_url=f"{BASE}/samples/no_such_sample.png",
            user_input=None,
            system_prompt=CLASSIFY_SYSTEM_PROMPT,
            job_id="j1",
        )


# Raw HTTP.


async def test_fail_next_returns_the_status_with_retry_after_and_respects_kind(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/standin/faults", json={"fail_next": 1, "status": 429, "kind": "answer"})
    vision = await client.post("/v1/chat/completions", json=classify_body(data_url(render(SAMPLES[0]))))
    assert vision.status_code == 200, "an answer fault does not touch vision calls"
    limited = await client.post(
        "/v1/chat/completions", json=answer_body({"classification": {"major_category": "미분류"}})
    )
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    await client.post("/v1/standin/faults", json={"fail_next": 1, "status": 500})
    failed = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "injected"
    assert (await stats(client))["faults_injected"] == 2


async def test_a_hang_holds_the_call_then_fails(client: httpx.AsyncClient) -> None:
    await client.post("/v1/standin/faults", json={"fail_next": 1, "status": "hang"})
    begun = time.perf_counter()
    hung = await client.post("/v1/chat/completions", json=classify_body(data_url(render(SAMPLES[0]))))
    assert time.perf_counter() - begun >= 0.01
    assert hung.status_code == 500
    assert hung.json()["error"]["code"] == "injected_hang"


async def test_stats_count_every_call_by_kind_and_job_and_reset_clears_them(
    client: httpx.AsyncClient,
) -> None:
    png_url = data_url(render(SAMPLES[0]))
    document = {"classification": {"major_category": "미분류"}, "disposal_rules": None, "user_input": None}
    await client.post(
        "/v1/chat/completions", json=classify_body(png_url), headers={JOB_HEADER: "a", STAGE_HEADER: "vision"}
    )
    await client.post("/v1/chat/completions", json=answer_body(document), headers={JOB_HEADER: "a"})
    await client.post("/v1/chat/completions", json=answer_body(document), headers={JOB_HEADER: "b"})
    bad = await client.post("/v1/chat/completions", json=answer_body({"nothing": 1}), headers={JOB_HEADER: "b"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_answer_document"
    await client.post("/v1/chat/completions", content=b"{not json", headers={JOB_HEADER: "c"})
    await client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert await stats(client) == {
        "calls": {"vision": 1, "answer": 3, "other": 2},
        "by_job": {"a": {"vision": 1, "answer": 1}, "b": {"answer": 2}},
        "faults_injected": 0,
        "rate_limited": 0,
        "in_flight": 0,
        "peak_in_flight": 1,
    }
    await client.post("/v1/standin/faults", json={"fail_next": 5, "status": 500})
    assert (await client.post("/v1/standin/reset")).status_code == 200
    assert await stats(client) == {
        "calls": {"vision": 0, "answer": 0, "other": 0},
        "by_job": {},
        "faults_injected": 0,
        "rate_limited": 0,
        "in_flight": 0,
        "peak_in_flight": 0,
    }
    ok = await client.post("/v1/chat/completions", json=classify_body(png_url))
    assert ok.status_code == 200, "reset dropped the pending faults"


async def test_malformed_requests_get_openai_style_400s(client: httpx.AsyncClient) -> None:
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b"{not json", "invalid_json"),
        ({"model": MODEL}, "invalid_request"),
        ({"model": MODEL, "messages": []}, "invalid_request"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "invalid_request"),
        (classify_body("ftp://example.com/x.png"), "invalid_image_url"),
        (classify_body("data:image/png;base64,%%%"), "invalid_image_url"),
        (classify_body(f"{BASE}/samples/nope.png"), "invalid_image_url"),
    ]
    for body, code in cases:
        if isinstance(body, bytes):
            response = await client.post("/v1/chat/completions", content=body)
        else:
            response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", code)
        assert response.headers["x-eco2-standin"] == "true"


async def test_a_body_over_8_mib_is_refused_with_413(client: httpx.AsyncClient) -> None:
    huge = classify_body(data_url(b"\0" * (7 * 1024 * 1024)))
    response = await client.post("/v1/chat/completions", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield b" " * (1024 * 1024)

    streamed = await client.post("/v1/chat/completions", content=chunked())
    assert streamed.status_code == 413
    assert (await stats(client))["calls"]["other"] == 2


async def test_every_response_is_marked_as_a_stand_in(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/nope"),
        ("GET", "/samples"),
    ]:
        response = await client.request(method, path)
        assert response.headers["x-eco2-standin"] == "true", path
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert "error" in missing.json()
    reply = await client.post(
        "/v1/chat/completions", json={"model": "any-model", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert reply.headers["x-eco2-standin"] == "true"
    completion = reply.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "eco2-standin/any-model"
    assert completion["system_fingerprint"] == "eco2-standin"
    assert "(stand-in)" in completion["choices"][0]["message"]["content"]
    streamed = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert streamed.headers["x-eco2-standin"] == "true"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in streamed.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


async def test_models_samples_health_and_metrics(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert "eco2-standin" in [m["id"] for m in models["data"]]
    listed = (await client.get("/samples")).json()["samples"]
    assert [s["name"] for s in listed] == [s.name for s in SAMPLES]
    assert listed[3]["url"] == f"{BASE}/samples/{SAMPLES[3].name}.png"
    assert listed[4]["situation_tags"] == list(SAMPLES[4].situation_tags)
    image = await client.get(f"/samples/{SAMPLES[0].name}.png")
    assert image.headers["content-type"] == "image/png"
    assert image.content == render(SAMPLES[0])
    assert (await client.get("/samples/nope.png")).status_code == 404
    assert (await client.get("/healthz")).json()["status"] == "ok"
    await client.post("/v1/chat/completions", json=classify_body(data_url(render(SAMPLES[0]))))
    await client.post("/v1/chat/completions", json=classify_body(f"{BASE}/samples/nope.png"))
    metrics = (await client.get("/metrics")).text
    assert 'eco2_standin_requests_total{kind="vision",status="200"} 1.0' in metrics
    assert 'eco2_standin_requests_total{kind="vision",status="400"} 1.0' in metrics
    assert "eco2_standin_request_seconds_bucket" in metrics


async def test_a_remote_image_url_is_fetched_with_limits() -> None:
    served = {"/pet.png": render(SAMPLES[3]), "/big.png": b"\0" * (5 * 1024 * 1024 + 1)}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        body = served.get(request.url.path)
        return httpx.Response(200, content=body) if body is not None else httpx.Response(404)

    config = StandinConfig(latency_scale=0.0)
    async for app in started(config, fetch_transport=httpx.MockTransport(handler)):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            pet = await client.post("/v1/chat/completions", json=classify_body("https://images.example/pet.png"))
            assert content_of(pet)["middle_category"] == "무색페트병"
            for path in ("/missing.png", "/big.png", "/down"):
                response = await client.post(
                    "/v1/chat/completions", json=classify_body(f"https://images.example{path}")
                )
                assert response.status_code == 400, path
                assert response.json()["error"]["code"] == "invalid_image_url"
                assert "refused" not in response.text


async def test_runtime_config_and_seeded_random_faults(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/standin/config", json={"fault_429": 2})).status_code == 400
    assert (await client.post("/v1/standin/config", json={"nonsense": 1})).status_code == 400
    changed = await client.post("/v1/standin/config", json={"fault_429": 0.5, "seed": 7})
    assert changed.json()["fault_429"] == 0.5
    assert (await client.get("/v1/standin/config")).json()["seed"] == 7
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}

    async def run() -> list[int]:
        return [(await client.post("/v1/chat/completions", json=body)).status_code for _ in range(20)]

    first = await run()
    assert set(first) == {200, 429}
    await client.post("/v1/standin/reset")
    assert await run() == first, "the same seed gives the same faults after a reset"


async def test_latency_is_applied_per_kind() -> None:
    # A wide contrast (1 s against none) so a loaded machine cannot blur which call was delayed.
    config = StandinConfig(vision_latency=5.0, answer_latency=0.0, latency_scale=0.2)
    assert config.latency("vision") == pytest.approx(1.0)
    async for app in started(config):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            begun = time.perf_counter()
            await client.post("/v1/chat/completions", json=classify_body(data_url(render(SAMPLES[0]))))
            assert time.perf_counter() - begun >= 1.0
            begun = time.perf_counter()
            await client.post(
                "/v1/chat/completions", json=answer_body({"classification": {"major_category": "미분류"}})
            )
            assert time.perf_counter() - begun < 1.0


async def test_the_lifespan_warns_that_this_is_not_a_real_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eco2_tools.standin"):
        async for _ in started(StandinConfig(latency_scale=0.0)):
            pass
    assert WARNING_LINE in caplog.text
    assert "STAND-IN model server, not a real model" in WARNING_LINE


def test_config_from_env() -> None:
    assert StandinConfig.from_env({}) == StandinConfig()
    assert StandinConfig().vision_latency == 3.5
    assert StandinConfig().answer_latency == 7.0
    config = StandinConfig.from_env(
        {
            "STANDIN_LATENCY_SCALE": "0.01",
            "STANDIN_FAULT_500": "0.25",
            "STANDIN_SEED": "3",
            "STANDIN_HANG_SECONDS": "5",
        }
    )
    assert (config.latency_scale, config.fault_500, config.seed, config.hang_seconds) == (0.01, 0.25, 3, 5.0)
    for env in (
        {"STANDIN_FAULT_429": "abc"},
        {"STANDIN_FAULT_HANG": "1.5"},
        {"STANDIN_FAULT_429": "0.6", "STANDIN_FAULT_500": "0.6"},
        {"STANDIN_SEED": "x"},
    ):
        with pytest.raises(SettingsError):
            StandinConfig.from_env(env)


async def test_the_answer_for_a_real_rule_matches_the_rule_book(model_client: ModelClient) -> None:
    book = RuleBook.load()
    for name in ("clear_pet_bottle_labeled", "aluminum_can_with_contents", "plastic_container_soiled"):
        classification = expected(name)
        rule = book.match(classification.major_category, classification.middle_category)
        assert rule is not None, name
        answer = await model_client.answer(
            model=MODEL,
            classification=classification,
            disposal_rules=rule.as_disposal_rules(),
            user_input=None,
            job_id="j1",
        )
        assert answer.disposal_steps == rule.steps
        assert list(answer.insufficiencies) == rule.insufficiencies(classification.situation_tags)
        assert answer.insufficiencies, f"{name}: its tag makes the disposal insufficient"
        assert rule.display_name in answer.user_answer


class _Exploding:
    def match_text(self, text: str) -> None:
        raise RuntimeError("secret internal detail")


async def test_a_crash_is_a_500_that_does_not_echo_the_exception() -> None:
    async for app in started(StandinConfig(latency_scale=0.0), rules=_Exploding()):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            response = await client.post("/v1/chat/completions", json=classify_body(data_url(unknown_png())))
    assert response.status_code == 500
    assert "secret" not in response.text
    assert response.json()["error"]["type"] == "server_error"
    assert response.headers["x-eco2-standin"] == "true"
