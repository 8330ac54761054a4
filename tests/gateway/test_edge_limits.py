"""Bounds per client address and per user: submits and chats per client address, concurrent SSE streams per user."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from eco2.gateway.ratelimit import client_address
from eco2.gateway.settings import TRUSTED_PROXIES
from tests.gateway.conftest import MakeGateway, gateway_env
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer, open_stream
from tests.support import Child, free_port, start_child

STREAM_LIMIT = 3


def request_from(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 40000)})


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.1.0.5", ("203.0.113.7",), "203.0.113.7"),  # ingress only
        ("127.0.0.1", ("203.0.113.7, 10.1.0.5, 10.1.0.9",), "203.0.113.7"),  # ingress, activator, queue-proxy
        ("10.1.0.5", ("198.51.100.1, 203.0.113.7",), "203.0.113.7"),  # the client's own claim is ignored
        ("10.1.0.5", ("198.51.100.1", "203.0.113.7"), "203.0.113.7"),  # the same, over two headers
        ("203.0.113.9", ("198.51.100.1",), "203.0.113.9"),  # reached directly: the header counts for nothing
        ("10.1.0.5", (), "10.1.0.5"),  # a caller inside the cluster
        ("10.1.0.5", ("not-an-address",), "unknown"),
    ],
)
def test_the_client_address_is_the_rightmost_hop_outside_the_trusted_proxies(
    peer: str, forwarded: tuple[str, ...], client: str
) -> None:
    assert client_address(request_from(peer, *forwarded), TRUSTED_PROXIES) == client


def test_the_trusted_proxies_can_be_configured() -> None:
    only_ingress = (ipaddress.ip_network("10.1.0.5/32"),)
    assert client_address(request_from("10.1.0.5", "10.9.9.9"), only_ingress) == "10.9.9.9"


@pytest.mark.parametrize("path", ["/api/v1/scan", "/api/v1/chat"])
async def test_submits_are_limited_per_client_address_whoever_the_user(make_gateway: MakeGateway, path: str) -> None:
    gateway = await make_gateway(ECO2_CLIENT_RATE_LIMIT_BURST="3", ECO2_CLIENT_RATE_LIMIT_PER_SECOND="0.001")
    body = {"image_url": PUBLIC_IMAGE} if path.endswith("scan") else {"message": "페트병은 어떻게 버려요?"}

    async def send(user: str, forwarded: str) -> httpx.Response:
        return await gateway.client.post(path, json=body, headers={**bearer(user), "X-Forwarded-For": forwarded})

    # Each from another user, and each claiming another origin left of what the ingress appended.
    statuses = [(await send(f"user-{i}", f"198.51.100.{i}, 203.0.113.7")).status_code for i in range(4)]
    assert statuses == [202, 202, 202, 429]
    refused = await send("user-9", "203.0.113.7")
    assert (refused.status_code, refused.json()["error"]) == (429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert (await send("user-9", "203.0.113.8")).status_code == 202, "another address has its own bucket"


async def test_a_keyed_submit_refused_per_client_pays_again_when_repeated(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_CLIENT_RATE_LIMIT_BURST="1", ECO2_CLIENT_RATE_LIMIT_PER_SECOND="0.001")
    headers = {"X-Forwarded-For": "203.0.113.20"}
    first = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers={**bearer("a"), **headers}
    )
    assert first.status_code == 202
    keyed = {**bearer("b"), **headers, "X-Idempotency-Key": "k-1"}
    for _ in range(2):  # never rides free: it never paid
        again = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=keyed)
        assert again.status_code == 429


@pytest.fixture(scope="module")
def limited_gateway(session_sink: RecordingSink, child_log_dir: Path) -> Iterator[Child]:
    """`eco2 serve gateway` as its own process (SSE streams for real) with a small per-user stream limit."""
    port = free_port()
    env = gateway_env(session_sink.url, ECO2_SSE_MAX_STREAMS_PER_USER=str(STREAM_LIMIT), ECO2_SSE_PING_SECONDS="0.5")
    child = start_child(["serve", "gateway", "--port", str(port)], port=port, env=env, log_dir=child_log_dir)
    yield child
    child.stop()


async def test_one_user_holds_at_most_the_limit_of_streams(limited_gateway: Child) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=limited_gateway.url, timeout=20, limits=limits) as client:
        accepted = await client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer("streamer"))
        assert accepted.status_code == 202, accepted.text
        url = f"/api/v1/scan/{accepted.json()['job_id']}/events"
        held = [await open_stream(client, url, headers=bearer("streamer")) for _ in range(STREAM_LIMIT)]
        for _, messages in held:
            assert (await anext(messages)).event == "queued"  # each stream is live
        refused = await client.get(url, headers=bearer("streamer"))
        assert (refused.status_code, refused.json()["error"]) == (429, "too_many_streams")
        other = await client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer("other"))
        other_stream, _ = await open_stream(
            client, f"/api/v1/scan/{other.json()['job_id']}/events", headers=bearer("other")
        )
        await other_stream.aclose()  # another user's streams are counted apart

        await held[0][0].aclose()
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the slot is released once the server sees the disconnect
            again = await client.send(client.build_request("GET", url, headers=bearer("streamer")), stream=True)
            if again.status_code == 200:
                break
            await again.aclose()
            assert asyncio.get_running_loop().time() < deadline, "a closed stream's slot was never released"
            await asyncio.sleep(0.1)
        await again.aclose()
        for response, _ in held[1:]:
            await response.aclose()
