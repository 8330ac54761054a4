"""image_url safety: only public http(s) hosts, whatever spelling or resolution tries to reach this network."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eco2.errors import BadRequest
from eco2.ssrf import blocked_reason, check_image_url, legacy_ipv4
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer

UNSAFE = [
    "http://127.0.0.1/a.png",
    "http://127.0.0.1:8090/samples/x.png",
    "http://localhost/a.png",
    "http://localhost./a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.1/a.png",
    "http://172.31.255.254/a.png",
    "http://192.168.0.10/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "http://0.0.0.0/a.png",
    "http://224.0.0.1/a.png",
    "http://240.0.0.1/a.png",
    "http://[::1]/a.png",
    "http://[::]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:7f00:1]/a.png",
    "http://[::ffff:169.254.169.254]/a.png",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1%25eth0]/a.png",
    "http://[fc00::1]/a.png",
    "http://[64:ff9b::7f00:1]/a.png",
    "http://[2002:7f00:1::]/a.png",
    "http://2130706433/a.png",
    "http://0x7f000001/a.png",
    "http://0x7f.1/a.png",
    "http://0177.0.0.1/a.png",
    "http://017700000001/a.png",
    "http://127.1/a.png",
    "http://10.1/a.png",
    "http://0/a.png",
    "ftp://93.184.216.34/a.png",
    "file:///etc/passwd",
    "gopher://93.184.216.34/",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "http://user:pass@93.184.216.34/a.png",
    "http://93.184.216.34\\@127.0.0.1/a.png",
    "http://93.184.216.34 /a.png",
    "http:///a.png",
    "http://[::1/a.png",
    "http://93.184.216.34:99999/a.png",
    "http://no-such-host.invalid/a.png",
    "http://93.184.216.34/" + "a" * 2100,
]


@pytest.mark.parametrize("url", UNSAFE)
async def test_unsafe_image_urls_are_400(gateway: Gateway, sink: RecordingSink, url: str) -> None:
    response = await gateway.client.post("/api/v1/scan", json={"image_url": url}, headers=bearer())
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] in ("invalid_image_url", "invalid_request")
    assert sink.events() == []


@pytest.mark.parametrize(
    "url", [PUBLIC_IMAGE, "https://93.184.216.34:8443/x.jpg", "http://[2606:4700:4700::1111]/x.png"]
)
async def test_public_addresses_pass(gateway: Gateway, url: str) -> None:
    response = await gateway.client.post("/api/v1/scan", json={"image_url": url}, headers=bearer())
    assert response.status_code == 202, response.text


async def test_an_allowlisted_origin_passes_even_when_local(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_IMAGE_URL_ALLOWLIST="http://127.0.0.1:8090, https://images.local")
    ok = await gateway.client.post(
        "/api/v1/scan", json={"image_url": "http://127.0.0.1:8090/samples/x.png"}, headers=bearer()
    )
    assert ok.status_code == 202
    other_port = await gateway.client.post(
        "/api/v1/scan", json={"image_url": "http://127.0.0.1:8091/samples/x.png"}, headers=bearer()
    )
    assert other_port.status_code == 400, "the allowlist is per origin, port included"


async def test_development_allowlists_the_standin_samples(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_ENV="development")
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": "http://127.0.0.1:8090/samples/clear_pet_bottle.png"}, headers=bearer()
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("answers", "allowed"),
    [
        (["93.184.216.34"], True),
        (["93.184.216.34", "2606:2800:220:1::248"], True),
        (["93.184.216.34", "10.0.0.5"], False),  # every address counts, not just the first
        (["::ffff:192.168.1.1"], False),
        (["169.254.169.254"], False),
        ([], False),
    ],
)
async def test_every_resolved_address_is_checked(answers: list[str], allowed: bool) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("images.example", 80)
        return answers

    check = check_image_url("http://images.example/x.png", allowlist=(), resolve=resolve)
    if allowed:
        await check
    else:
        with pytest.raises(BadRequest) as caught:
            await check
        assert caught.value.status == 400


async def test_a_resolver_that_hangs_is_a_400_in_time() -> None:
    import asyncio

    async def hang(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    with pytest.raises(BadRequest, match="in time"):
        await check_image_url("http://slow.example/x.png", allowlist=(), resolve=hang, timeout=0.05)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("10.0x10203", "10.1.2.3"),
        ("93.184.216.34", "93.184.216.34"),
    ],
)
def test_legacy_ipv4_forms_read_like_libc(host: str, address: str) -> None:
    assert legacy_ipv4(host) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "1..2", "4294967296", "08.1.1.1x"])
def test_non_numeric_hosts_are_not_read_as_ipv4(host: str) -> None:
    assert legacy_ipv4(host) is None


PRIVATE_V4 = st.sampled_from(
    [
        ipaddress.ip_network(n)
        for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
    ]
)


@settings(max_examples=300, deadline=None, database=None)
@given(network=PRIVATE_V4, offset=st.integers(min_value=0), spelling=st.sampled_from(["dec", "hex", "oct", "dotted"]))
def test_any_spelling_of_a_private_ipv4_is_blocked(network: ipaddress.IPv4Network, offset: int, spelling: str) -> None:
    address = network[offset % network.num_addresses]
    number = int(address)
    host = {
        "dec": str(number),
        "hex": hex(number),
        "oct": "0" + oct(number)[2:],
        "dotted": str(address),
    }[spelling]
    parsed = legacy_ipv4(host)
    assert parsed == address
    assert blocked_reason(parsed) is not None
    assert blocked_reason(ipaddress.IPv6Address(f"::ffff:{address}")) is not None


@settings(max_examples=300, deadline=None, database=None)
@given(st.ip_addresses())
def test_only_global_addresses_are_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if blocked_reason(address) is None:
        assert address.is_global
        assert not address.is_private
        assert not address.is_loopback
        assert not address.is_link_local
