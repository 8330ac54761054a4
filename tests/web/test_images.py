"""Photo uploads: a presigned POST to the S3-compatible store, the store itself enforcing type, size and key,
the gateway refusing another user's upload, and the whole pack scanning an uploaded photo (vision reads it
through a presigned GET; the bucket is private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from eco2_tools.local.runner import LocalPack
from eco2_tools.sse_client import aparse
from eco2_tools.standin import samples
from eco2_tools.standin.images import sample_png
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import RecordingSink, bearer
from tests.support import wait_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 200


async def presign(client: httpx.AsyncClient, headers: dict[str, str], content_type: str, size: int) -> httpx.Response:
    return await client.post("/api/v1/images", json={"content_type": content_type, "size": size}, headers=headers)


async def upload(grant: dict[str, Any], content: bytes, content_type: str) -> httpx.Response:
    form = grant["upload"]
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(form["url"], data=form["fields"], files={"file": ("photo", content, content_type)})


async def test_a_presigned_upload_lands_and_the_store_refuses_other_types_and_sizes(
    make_gateway: MakeGateway, emulator: dict[str, str]
) -> None:
    gateway = await make_gateway(**emulator)
    response = await presign(gateway.client, bearer("alice"), "image/png", len(PNG))
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["image_url"].startswith(f"{emulator['S3_ENDPOINT_URL']}/eco2-uploads/uploads/")
    assert grant["upload"]["fields"]["Content-Type"] == "image/png"

    too_big = await upload(grant, PNG + b"\0", "image/png")
    assert too_big.status_code == 400
    assert "EntityTooLarge" in too_big.text
    other_type = await upload(
        {**grant, "upload": {**grant["upload"], "fields": {**grant["upload"]["fields"], "Content-Type": "image/gif"}}},
        PNG,
        "image/gif",
    )
    assert other_type.status_code == 403
    assert "Policy Condition failed" in other_type.text
    other_key = dict(grant["upload"]["fields"], key=grant["key"].replace(".png", "-2.png"))
    assert (
        await upload({**grant, "upload": {**grant["upload"], "fields": other_key}}, PNG, "image/png")
    ).status_code == 403

    assert (await upload(grant, PNG, "image/png")).status_code == 204
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(grant["image_url"])).status_code == 403  # private: no presigned GET, no read
    assert gateway.context.storage is not None
    async with httpx.AsyncClient(timeout=10) as http:
        stored = await http.get(gateway.context.storage.readable_url(grant["image_url"]))
    assert (stored.status_code, stored.content) == (200, PNG)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"content_type": "image/gif", "size": 10}, "unsupported_image_type"),
        ({"content_type": "image/jpeg", "size": 10 * 1024 * 1024 + 1}, "image_too_large"),
        ({"content_type": "image/jpeg", "size": 0}, "image_too_large"),
        ({"content_type": "image/jpeg"}, "invalid_request"),
    ],
)
async def test_the_gateway_refuses_what_it_cannot_presign(
    make_gateway: MakeGateway, emulator: dict[str, str], body: dict[str, Any], code: str
) -> None:
    gateway = await make_gateway(**emulator)
    response = await gateway.client.post("/api/v1/images", json=body, headers=bearer())
    assert response.status_code in (400, 422)
    assert response.json()["error"] == code


async def test_without_a_store_uploads_answer_503(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    response = await presign(gateway.client, bearer(), "image/png", 10)
    assert (response.status_code, response.json()["error"]) == (503, "uploads_unavailable")


async def test_a_scan_of_another_users_upload_is_refused(make_gateway: MakeGateway, emulator: dict[str, str]) -> None:
    gateway = await make_gateway(**emulator)
    grant = (await presign(gateway.client, bearer("alice"), "image/png", len(PNG))).json()
    assert (await upload(grant, PNG, "image/png")).status_code == 204
    theft = await gateway.client.post("/api/v1/scan", json={"image_url": grant["image_url"]}, headers=bearer("mallory"))
    assert (theft.status_code, theft.json()["error"]) == (403, "image_not_yours")
    own = await gateway.client.post("/api/v1/scan", json={"image_url": grant["image_url"]}, headers=bearer("alice"))
    assert own.status_code == 202, own.text


def spellings(image_url: str) -> dict[str, str]:
    """Other spellings of one store URL: each names the same object to a lenient reader."""
    scheme, rest = image_url.split("://", 1)
    origin, _, path = rest.partition("/")
    bucket, _, key = path.partition("/")
    return {
        "upper-case scheme": f"{scheme.upper()}://{rest}",
        "dot segment": f"{scheme}://{origin}/{bucket}/x/../{key}",
        "doubled slash": f"{scheme}://{origin}/{bucket}//{key}",
        "encoded key": f"{scheme}://{origin}/{bucket}/{key.replace('uploads', '%75ploads', 1)}",
        "query string": f"{image_url}?x=1",
        "fragment": f"{image_url}#x",
    }


@pytest.mark.parametrize(
    "spelling",
    ["upper-case scheme", "dot segment", "doubled slash", "encoded key", "query string", "fragment"],
)
async def test_another_spelling_of_another_users_upload_is_refused(
    make_gateway: MakeGateway, emulator: dict[str, str], sink: RecordingSink, spelling: str
) -> None:
    gateway = await make_gateway(**emulator)
    grant = (await presign(gateway.client, bearer("alice"), "image/png", len(PNG))).json()
    url = spellings(grant["image_url"])[spelling]
    for path in ("/api/v1/scan", "/api/v1/chat"):
        body = {"image_url": url} if path.endswith("scan") else {"image_url": url, "message": "what is this?"}
        theft = await gateway.client.post(path, json=body, headers=bearer("mallory"))
        assert theft.status_code in (400, 403), (path, theft.text)
        assert theft.json()["error"] in ("image_not_yours", "image_url_not_canonical")
    assert sink.events() == []


@pytest.mark.parametrize("spelling", ["upper-case scheme", "dot segment", "doubled slash", "encoded key"])
async def test_another_spelling_of_ones_own_upload_is_passed_on_in_the_canonical_form(
    make_gateway: MakeGateway, emulator: dict[str, str], sink: RecordingSink, spelling: str
) -> None:
    gateway = await make_gateway(**emulator)
    grant = (await presign(gateway.client, bearer("alice"), "image/png", len(PNG))).json()
    url = spellings(grant["image_url"])[spelling]
    accepted = await gateway.client.post("/api/v1/scan", json={"image_url": url}, headers=bearer("alice"))
    assert accepted.status_code == 202, accepted.text

    async def sent() -> bool:
        return len(sink.events()) == 1

    await wait_for(sent, what="the scan event was sent")
    data = sink.events()[0].event.get_data()
    assert isinstance(data, dict)
    assert data["image_url"] == grant["image_url"]


@pytest.mark.parametrize("spelling", ["query string", "fragment"])
async def test_a_store_url_with_a_query_or_fragment_is_refused_even_for_its_owner(
    make_gateway: MakeGateway, emulator: dict[str, str], spelling: str
) -> None:
    gateway = await make_gateway(**emulator)
    grant = (await presign(gateway.client, bearer("alice"), "image/png", len(PNG))).json()
    url = spellings(grant["image_url"])[spelling]
    refused = await gateway.client.post("/api/v1/scan", json={"image_url": url}, headers=bearer("alice"))
    assert (refused.status_code, refused.json()["error"]) == (400, "image_url_not_canonical")


async def test_eco2_up_starts_the_emulator_and_an_uploaded_photo_is_scanned(start_pack: Callable[..., Any]) -> None:
    secret = "web-test-secret-0123456789abcdef0123456789"
    pack: LocalPack = await start_pack(
        None, standin=True, storage=True, extra_env={"STANDIN_LATENCY_SCALE": "0.02", "ECO2_JWT_SECRET": secret}
    )
    store_url = pack.snapshot()["storage"]
    assert store_url
    assert store_url.startswith("http://127.0.0.1:")
    headers = bearer("uploader", secret=secret)
    sample = samples.by_name("glass_bottle")
    assert sample is not None
    photo = sample_png(sample)
    gateway = f"http://127.0.0.1:{pack.options.gateway_port}"
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        grant = (await presign(http, headers, "image/png", len(photo))).json()
        assert grant["image_url"].startswith(store_url)
        assert (await upload(grant, photo, "image/png")).status_code == 204
        accepted = await http.post("/api/v1/scan", json={"image_url": grant["image_url"]}, headers=headers)
        assert accepted.status_code == 202, accepted.text
        async with http.stream("GET", accepted.json()["stream_url"], headers=headers) as stream:
            events = [m async for m in aparse(stream.aiter_lines())]
        assert events[-1].event == "done"
        result = (await http.get(accepted.json()["result_url"], headers=headers)).json()
    classification = result["pipeline_result"]["classification"]
    assert (classification["major_category"], classification["middle_category"]) == (
        sample.major_category,
        sample.middle_category,
    )
