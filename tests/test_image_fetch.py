"""The stage's own image fetch against a real HTTP server: the connection goes to the address the SSRF check approved
(the name is never resolved again), every redirect hop is checked, and only a bounded image comes back."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from ipaddress import ip_address
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from eco2.errors import BadRequest, TransientError
from eco2.image_fetch import ImageFetcher, pinned
from eco2.settings import Settings
from eco2.ssrf import Address, check_image_url
from eco2.stage_context import StageContext
from tests.support import REDIS_TEST_URL, free_port, http_server

# A name no DNS answers: a fetch that reaches the server under it used the approved address, not a lookup.
PINNED_HOST = "images.invalid"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LIMIT = 1024


async def handler(request: web.Request) -> web.StreamResponse:
    seen.append(request.headers.get("Host", ""))
    path = request.path
    if path == "/photo.png":
        return web.Response(body=PNG, content_type="image/png")
    if path == "/page":
        return web.Response(text="<html></html>", content_type="text/html")
    if path == "/huge":
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # chunked: no Content-Length
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"\x00" * LIMIT)
        return response
    if path == "/to-metadata":
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
    if path == "/to-photo":
        raise web.HTTPFound("/photo.png")
    return web.Response(status=404)


seen: list[str] = []


@pytest.fixture
async def server() -> AsyncIterator[str]:
    seen.clear()
    async with http_server(handler) as url:
        yield url


def fetcher() -> ImageFetcher:
    """The real check for every host but PINNED_HOST, which it approves at the test server's address (a real
    check would refuse a loopback address: here it stands for the public address DNS gave the check)."""

    async def check(url: str) -> list[Address] | None:
        if urlsplit(url).hostname == PINNED_HOST:
            return [ip_address("127.0.0.1")]
        return await check_image_url(url, allowlist=frozenset())

    return ImageFetcher(check, max_bytes=LIMIT, timeout_seconds=5)


def on_pinned_host(server: str, path: str) -> str:
    return f"http://{PINNED_HOST}:{urlsplit(server).port}{path}"


async def test_the_fetch_connects_to_the_approved_address_with_the_urls_host(server: str) -> None:
    images = fetcher()
    try:
        data_url = await images.data_url(on_pinned_host(server, "/photo.png"))
    finally:
        await images.aclose()
    assert data_url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert seen == [f"{PINNED_HOST}:{urlsplit(server).port}"]


async def test_a_relative_redirect_is_checked_and_pinned_again(server: str) -> None:
    images = fetcher()
    try:
        assert (await images.data_url(on_pinned_host(server, "/to-photo"))).startswith("data:image/png;base64,")
    finally:
        await images.aclose()
    assert len(seen) == 2


async def test_a_redirect_into_the_network_is_refused_before_it_is_followed(server: str) -> None:
    images = fetcher()
    try:
        with pytest.raises(BadRequest) as refused:
            await images.data_url(on_pinned_host(server, "/to-metadata"))
    finally:
        await images.aclose()
    assert refused.value.code == "invalid_image_url"
    assert "cloud metadata" in refused.value.message


@pytest.mark.parametrize(("path", "code"), [("/page", "image_unreachable"), ("/huge", "image_too_large")])
async def test_only_a_bounded_image_comes_back(server: str, path: str, code: str) -> None:
    images = fetcher()
    try:
        with pytest.raises(BadRequest) as refused:
            await images.data_url(on_pinned_host(server, path))
    finally:
        await images.aclose()
    assert refused.value.code == code


async def test_a_host_that_does_not_answer_is_transient() -> None:
    images = fetcher()
    try:
        with pytest.raises(TransientError):
            await images.data_url(f"http://{PINNED_HOST}:{free_port()}/photo.png")
    finally:
        await images.aclose()


def test_a_pinned_https_request_keeps_the_name_for_its_certificate() -> None:
    target, headers, extensions = pinned("https://img.example.com/a/b.png?x=1", ip_address("2001:db8::5"))
    assert target == "https://[2001:db8::5]/a/b.png?x=1"
    assert headers == {"Host": "img.example.com"}
    assert extensions == {"sni_hostname": "img.example.com"}
    target, headers, extensions = pinned("http://img.example.com:8080/p.png", ip_address("198.51.100.4"))
    assert (target, headers, extensions) == ("http://198.51.100.4:8080/p.png", {"Host": "img.example.com:8080"}, {})


async def test_a_stage_hands_the_model_the_bytes_of_a_public_url_and_an_allowlisted_url_as_it_is(server: str) -> None:
    settings = Settings(function_name="vision", redis_url=REDIS_TEST_URL, image_url_allowlist=server)
    ctx = await StageContext.create(settings)
    ctx._images = fetcher()  # the real fetcher, its check approving PINNED_HOST at the test server
    try:
        readable = await ctx.readable_image(on_pinned_host(server, "/photo.png"), "user-1")
        assert readable == "data:image/png;base64," + base64.b64encode(PNG).decode()
        assert await ctx.readable_image(f"{server}/photo.png", "user-1") == f"{server}/photo.png"
        with pytest.raises(BadRequest):
            await ctx.readable_image("http://127.0.0.1:15672/api/users", "user-1")
    finally:
        await ctx.aclose()
