"""The page's surface: security headers on /app and its files, no inline script, development tokens only with
the development secret and never cached."""

from __future__ import annotations

import re

import pytest

from eco2.gateway.settings import DEV_JWT_SECRET
from eco2.gateway.web import STATIC
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import SECRET


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize("path", ["/app", "/app/static/app.js", "/app/static/app.css"])
async def test_the_page_and_its_files_carry_the_security_headers(make_gateway: MakeGateway, path: str) -> None:
    gateway = await make_gateway()
    response = await gateway.client.get(path)
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = directives(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"], "no inline or eval'd script"
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_policy_lets_the_page_upload_to_the_photo_store(
    make_gateway: MakeGateway, emulator: dict[str, str]
) -> None:
    gateway = await make_gateway(**emulator)
    policy = directives((await gateway.client.get("/app")).headers["content-security-policy"])
    assert emulator["S3_ENDPOINT_URL"] in policy["connect-src"]


def test_the_page_has_no_inline_script_or_handlers() -> None:
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts, "the page loads its script"
    assert all("src=" in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I), "no inline event handlers"


def test_the_page_keeps_the_token_out_of_local_storage() -> None:
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"localStorage\.(get|set)Item\(\"eco2\.token\"", script)
    assert 'sessionStorage.setItem("eco2.token"' in script


async def test_a_development_token_is_never_cached(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_ENV="development", ECO2_JWT_SECRET="")
    response = await gateway.client.post("/app/dev-token", json={"user": "dev"})
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("secret", [SECRET, DEV_JWT_SECRET + "-but-another"])
async def test_the_development_token_endpoint_never_signs_with_a_real_secret(
    make_gateway: MakeGateway, secret: str
) -> None:
    gateway = await make_gateway(ECO2_ENV="development", ECO2_JWT_SECRET=secret)
    response = await gateway.client.post("/app/dev-token", json={"user": "dev"})
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
