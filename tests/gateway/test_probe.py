"""Following image_url before accepting a scan: a redirect into this network is a 400, a dead link too.

A real HTTP server on 127.0.0.1 plays the image host. Its origin is allowlisted (it is on loopback), and a
fake DNS gives it a second name; every other name resolves for real, so `localhost` is the loopback it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from eco2.errors import BadRequest
from eco2.gateway.probe import MAX_REDIRECTS, ImageProbe, PinnedResolver
from eco2.gateway.settings import ImagePolicy
from eco2.ssrf import literal_address, resolve_host
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import RecordingSink, bearer
from tests.support import free_port

PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class ImageHost:
    port: int
    heads: list[str]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _routes(host: ImageHost) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def redirect(location: str) -> web.Response:
        return web.Response(status=302, headers={"Location": location})

    @routes.route("*", "/img.png")
    async def image(request: web.Request) -> web.Response:
        host.heads.append(request.method)
        return web.Response(body=PNG, content_type="image/png")

    @routes.route("*", "/page")
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    @routes.route("*", "/hop")
    async def hop(request: web.Request) -> web.Response:
        return redirect("/img.png")

    @routes.route("*", "/to-other-name")
    async def other_name(request: web.Request) -> web.Response:
        return redirect(host.url("/img.png", "images.test"))

    @routes.route("*", "/loop")
    async def loop(request: web.Request) -> web.Response:
        return redirect("/loop")

    @routes.route("*", "/to/{target:.*}")
    async def to(request: web.Request) -> web.Response:
        return redirect(request.query["url"])

    @routes.route("*", "/get-only.jpg")
    async def get_only(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=405)
        assert request.headers.get("Range") == "bytes=0-0"
        return web.Response(status=206, body=PNG[:1], content_type="image/jpeg")

    return routes


@pytest.fixture
async def image_host() -> AsyncIterator[ImageHost]:
    host = ImageHost(free_port(), [])
    app = web.Application()
    app.add_routes(_routes(host))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", host.port).start()
    yield host
    await runner.cleanup()


async def fake_dns(name: str, port: int) -> list[str]:
    return ["127.0.0.1"] if name == "images.test" else await resolve_host(name, port)


@pytest.fixture
async def probe(image_host: ImageHost) -> AsyncIterator[ImageProbe]:
    allowed = {image_host.origin, f"http://images.test:{image_host.port}"}
    probe = ImageProbe(ImagePolicy(frozenset(allowed), timeout_seconds=2, dns_timeout_seconds=1), resolve=fake_dns)
    yield probe
    await probe.aclose()


async def refused(probe: ImageProbe, url: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        await probe.check(url)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("path", ["/img.png", "/hop", "/to-other-name", "/get-only.jpg"])
async def test_urls_that_lead_to_an_image_pass(probe: ImageProbe, image_host: ImageHost, path: str) -> None:
    await probe.check(image_host.url(path))


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.7/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/x.png",
        "http://[::1]/x.png",
        "http://localhost:{port}/img.png",  # the image host itself, under a name the allowlist does not cover
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_into_this_network_is_a_400(probe: ImageProbe, image_host: ImageHost, target: str) -> None:
    error = await refused(probe, image_host.url(f"/to/x?url={target.format(port=image_host.port)}"))
    assert error.code == "invalid_image_url"
    assert "redirects" in error.message


@pytest.mark.parametrize(
    ("path", "says"),
    [("/missing.png", "404"), ("/page", "not an image"), ("/loop", f"more than {MAX_REDIRECTS}")],
)
async def test_a_url_that_leads_nowhere_useful_is_a_400(
    probe: ImageProbe, image_host: ImageHost, path: str, says: str
) -> None:
    error = await refused(probe, image_host.url(path))
    assert error.code == "image_unreachable"
    assert says in error.message


async def test_a_host_that_does_not_answer_is_a_400(image_host: ImageHost) -> None:
    closed = free_port()
    probe = ImageProbe(ImagePolicy(frozenset({f"http://127.0.0.1:{closed}"}), timeout_seconds=1, dns_timeout_seconds=1))
    try:
        error = await refused(probe, f"http://127.0.0.1:{closed}/img.png")
    finally:
        await probe.aclose()
    assert error.code == "image_unreachable"


async def test_trusted_origins_and_a_disabled_probe_do_not_fetch(image_host: ImageHost) -> None:
    for trusted, follow in (({image_host.origin}, True), ((), False)):
        policy = ImagePolicy(frozenset({image_host.origin}), frozenset(trusted), follow, 1, dns_timeout_seconds=1)
        probe = ImageProbe(policy)
        try:
            await probe.check(image_host.url("/loop"))  # would be refused if it were followed
        finally:
            await probe.aclose()
    assert image_host.heads == []


async def test_connections_go_to_the_addresses_that_were_checked() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding_dns(name: str, port: int) -> list[str]:
        return next(answers)

    resolver = PinnedResolver(rebinding_dns)
    checked = [a for a in (literal_address(x) for x in await rebinding_dns("cdn.example", 80)) if a is not None]
    resolver.approve("CDN.example", checked)
    resolved = await resolver.resolve("cdn.example", 80)
    assert [r["host"] for r in resolved] == ["93.184.216.34"], "DNS must not be asked again after the check"


async def test_the_submit_answers_400_for_a_redirect_to_a_private_host(
    make_gateway: MakeGateway, sink: RecordingSink, image_host: ImageHost
) -> None:
    gateway = await make_gateway(ECO2_IMAGE_PROBE="true", ECO2_IMAGE_URL_ALLOWLIST=image_host.origin)
    redirecting = image_host.url("/to/x?url=http://192.168.0.1/x.png")
    refused = await gateway.client.post("/api/v1/scan", json={"image_url": redirecting}, headers=bearer())
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_image_url"
    accepted = await gateway.client.post("/api/v1/scan", json={"image_url": image_host.url("/hop")}, headers=bearer())
    assert accepted.status_code == 202, accepted.text
    assert len(sink.events()) == 1
