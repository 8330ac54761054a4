"""Auth: HS256 and RS256 JWTs, required claims, expiry, logout revocation, trusted X-User-ID, misconfiguration."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings

import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from eco2 import keys
from eco2.gateway.auth import issue_token
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.support import PUBLIC_IMAGE, SECRET, bearer, token
from tests.support import wait_for

SCAN = {"image_url": PUBLIC_IMAGE}


async def submit(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = await gateway.client.post("/api/v1/scan", json=SCAN, headers=headers)
    return response.status_code, response.json()


async def test_a_valid_token_is_accepted(gateway: Gateway) -> None:
    assert (await submit(gateway, bearer()))[0] == 202


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
        ({"Authorization": "Bearer "}, "missing_token"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ],
)
async def test_missing_or_malformed_credentials_are_401(gateway: Gateway, headers: dict[str, str], code: str) -> None:
    status, body = await submit(gateway, headers)
    assert (status, body["error"]) == (401, code)


async def test_an_expired_token_is_401(gateway: Gateway) -> None:
    expired = token(now=time.time() - 3600, ttl=60)
    status, body = await submit(gateway, {"Authorization": f"Bearer {expired}"})
    assert (status, body["error"]) == (401, "token_expired")


async def test_a_token_accepted_before_is_refused_once_it_expires(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_JWT_LEEWAY_SECONDS="0")
    issued = time.time()
    short = {"Authorization": f"Bearer {token(now=issued, ttl=1)}"}
    assert (await submit(gateway, short))[0] == 202  # verified, and remembered as verified
    deadline = time.monotonic() + 5
    while time.time() <= int(issued) + 1:  # the exp claim is whole seconds
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    status, body = await submit(gateway, short)
    assert (status, body["error"]) == (401, "token_expired")


async def test_a_wrong_signature_is_401(gateway: Gateway) -> None:
    forged = token(secret="another-secret-that-is-long-enough-0123456789")
    status, body = await submit(gateway, {"Authorization": f"Bearer {forged}"})
    assert (status, body["error"]) == (401, "invalid_token")
    assert "Signature" in body["message"]


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti"])
async def test_every_required_claim_must_be_there(gateway: Gateway, missing: str) -> None:
    now = int(time.time())
    claims = {"sub": "u", "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex, "iss": "eco2", "aud": "eco2"}
    del claims[missing]
    status, body = await submit(gateway, {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"})
    assert (status, body["error"]) == (401, "invalid_token")


@pytest.mark.parametrize(("issuer", "audience"), [("someone-else", "eco2"), ("eco2", "another-app")])
async def test_issuer_and_audience_are_checked(gateway: Gateway, issuer: str, audience: str) -> None:
    forged = token(issuer=issuer, audience=audience)
    assert (await submit(gateway, {"Authorization": f"Bearer {forged}"}))[0] == 401


async def test_the_none_algorithm_is_refused(gateway: Gateway) -> None:
    now = int(time.time())
    claims = {"sub": "u", "iat": now, "exp": now + 60, "jti": "j", "iss": "eco2", "aud": "eco2"}
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]  # PyJWT's stubs forbid it
    assert (await submit(gateway, {"Authorization": f"Bearer {unsigned}"}))[0] == 401


async def test_logout_revokes_the_token_until_it_expires(gateway: Gateway, redis_client: aioredis.Redis) -> None:
    raw = token(ttl=600)
    headers = {"Authorization": f"Bearer {raw}"}
    assert (await submit(gateway, headers))[0] == 202
    logout = await gateway.client.post("/api/v1/auth/logout", headers=headers)
    assert logout.status_code == 204
    status, body = await submit(gateway, headers)
    assert (status, body["error"]) == (401, "token_revoked")
    jti = jwt.decode(raw, options={"verify_signature": False})["jti"]
    assert 500 < await redis_client.ttl(keys.revoked_token(jti)) <= 600 + 60
    assert (await submit(gateway, bearer()))[0] == 202, "only that token is revoked"


async def test_a_revocation_reaches_every_gateway_through_the_fanout_exchange(make_gateway: MakeGateway) -> None:
    first, second = await make_gateway(), await make_gateway()
    await wait_for(lambda: _live(first, second), timeout=10, what="both gateways consuming")
    headers = {"Authorization": f"Bearer {token()}"}
    assert (await submit(second, headers))[0] == 202
    assert (await first.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204

    async def refused() -> bool:
        return (await submit(second, headers))[1].get("error") == "token_revoked"

    await wait_for(refused, timeout=2, what="the second gateway refusing the revoked token")
    assert second.context.auth.blacklist.redis_lookups == 0, "heard on the exchange, not asked of Redis"


async def _live(*gateways: Gateway) -> bool:
    return all(g.context.caches.live for g in gateways)


def _rsa_pair() -> tuple[str, str]:
    """A fresh RSA key pair as PEM: (private, public)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public.decode()


async def test_rs256_tokens_are_checked_with_the_public_key(make_gateway: MakeGateway) -> None:
    private_pem, public_pem = _rsa_pair()
    gateway = await make_gateway(ECO2_JWT_PUBLIC_KEY=public_pem.replace("\n", "\\n"))
    signed = issue_token("rs-user", private_pem, 600, algorithm="RS256")
    status, body = await submit(gateway, {"Authorization": f"Bearer {signed}"})
    assert status == 202, body
    assert (await submit(gateway, bearer()))[0] == 401, "HS256 tokens are refused once RS256 is configured"


NEW_SECRET = "the-rotated-in-secret-0123456789abcdef0123456789"


async def test_hs256_rotation_accepts_the_previous_secret_until_it_is_unset(make_gateway: MakeGateway) -> None:
    rotating = await make_gateway(ECO2_JWT_SECRET=NEW_SECRET, ECO2_JWT_PREVIOUS_SECRET=SECRET)
    assert (await submit(rotating, bearer(secret=NEW_SECRET)))[0] == 202
    assert (await submit(rotating, bearer()))[0] == 202, "a token signed with the previous secret still counts"
    status, body = await submit(rotating, bearer(secret="a-third-secret-nobody-configured-0123456789"))
    assert (status, body["error"]) == (401, "invalid_token")
    rotated = await make_gateway(ECO2_JWT_SECRET=NEW_SECRET)
    assert (await submit(rotated, bearer()))[0] == 401, "once the previous secret is unset its tokens are refused"


async def test_a_bad_public_key_refuses_every_token_with_a_clear_message(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_JWT_PUBLIC_KEY="not a pem")
    status, body = await submit(gateway, bearer())
    assert (status, body["error"]) == (401, "auth_not_configured")
    assert "ECO2_JWT_PUBLIC_KEY" in body["message"]


@pytest.mark.parametrize("secret", ["", "too-short"])
async def test_without_a_usable_secret_every_request_is_401_not_a_crash(make_gateway: MakeGateway, secret: str) -> None:
    gateway = await make_gateway(ECO2_JWT_SECRET=secret)
    status, body = await submit(gateway, bearer())
    assert (status, body["error"]) == (401, "auth_not_configured")
    assert "ECO2_JWT_SECRET" in body["message"]
    assert (await gateway.client.get("/healthz")).status_code == 200


async def test_development_has_a_default_secret(make_gateway: MakeGateway) -> None:
    from eco2.gateway.settings import DEV_JWT_SECRET

    gateway = await make_gateway(ECO2_ENV="development", ECO2_JWT_SECRET="")
    assert (await submit(gateway, bearer(secret=DEV_JWT_SECRET)))[0] == 202


async def test_x_user_id_counts_only_behind_a_trusted_edge(make_gateway: MakeGateway) -> None:
    untrusted = await make_gateway()
    assert (await submit(untrusted, {"X-User-ID": "edge-user"}))[0] == 401
    trusted = await make_gateway(ECO2_TRUST_USER_HEADER="true")
    status, body = await submit(trusted, {"X-User-ID": "edge-user"})
    assert status == 202
    job = await trusted.store.get(body["job_id"])
    assert job is not None
    assert job["user_id"] == "edge-user"
    assert (await submit(trusted, {"X-User-ID": "x" * 129}))[0] == 401
    vip = await trusted.client.post("/api/v1/scan", json=SCAN, headers={"X-User-ID": "v", "X-User-Priority": "vip"})
    vip_job = await trusted.store.get(vip.json()["job_id"])
    assert vip_job is not None
    assert vip_job["priority"] == "high"
    logout = await trusted.client.post("/api/v1/auth/logout", headers={"X-User-ID": "edge-user"})
    assert (logout.status_code, logout.json()["error"]) == (400, "no_token")


async def test_401_answers_carry_a_bearer_challenge(gateway: Gateway) -> None:
    response = await gateway.client.post("/api/v1/scan", json=SCAN)
    assert response.headers["www-authenticate"].startswith("Bearer")


def _hs256(secret: str, **claims: object) -> dict[str, str]:
    """A bearer header signed with any key, however weak (PyJWT warns about short ones; the test means it)."""
    now = int(time.time())
    body = {"sub": "user-1", "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex, "iss": "eco2", "aud": "eco2"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signed = jwt.encode({**body, **claims}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {signed}"}


async def test_a_previous_secret_shorter_than_the_minimum_is_not_a_key(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_JWT_PREVIOUS_SECRET="x")
    status, body = await submit(gateway, _hs256("x"))
    assert (status, body["error"]) == (401, "invalid_token")
    assert (await submit(gateway, bearer()))[0] == 202, "the current secret still works"


async def test_a_previous_hs256_secret_is_not_accepted_beside_rs256(make_gateway: MakeGateway) -> None:
    private_pem, public_pem = _rsa_pair()
    gateway = await make_gateway(ECO2_JWT_SECRET="", ECO2_JWT_PUBLIC_KEY=public_pem, ECO2_JWT_PREVIOUS_SECRET=SECRET)
    signed = issue_token("rs-user", private_pem, 600, algorithm="RS256")
    assert (await submit(gateway, {"Authorization": f"Bearer {signed}"}))[0] == 202
    status, body = await submit(gateway, bearer())
    assert (status, body["error"]) == (401, "invalid_token"), "a previous key only of the current family"


async def test_a_previous_rs256_key_still_counts_during_rotation(make_gateway: MakeGateway) -> None:
    old_private, old_public = _rsa_pair()
    _, new_public = _rsa_pair()
    gateway = await make_gateway(
        ECO2_JWT_SECRET="", ECO2_JWT_PUBLIC_KEY=new_public, ECO2_JWT_PREVIOUS_PUBLIC_KEY=old_public
    )
    signed = issue_token("rs-user", old_private, 600, algorithm="RS256")
    assert (await submit(gateway, {"Authorization": f"Bearer {signed}"}))[0] == 202


@pytest.mark.parametrize("exp_offset", [2**62, 3 * 24 * 3600])
async def test_a_token_living_longer_than_the_maximum_is_refused_and_logout_is_no_500(
    make_gateway: MakeGateway, exp_offset: int
) -> None:
    gateway = await make_gateway(ECO2_JWT_MAX_LIFETIME_SECONDS=str(24 * 3600))
    headers = _hs256(SECRET, exp=int(time.time()) + exp_offset)
    status, body = await submit(gateway, headers)
    assert (status, body["error"]) == (401, "token_lifetime_too_long")
    logout = await gateway.client.post("/api/v1/auth/logout", headers=headers)
    assert (logout.status_code, logout.json()["error"]) == (401, "token_lifetime_too_long")
    assert (await submit(gateway, bearer(ttl=23 * 3600)))[0] == 202, "a token within the maximum is fine"


async def test_a_token_issued_long_ago_for_a_long_life_is_refused(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_JWT_MAX_LIFETIME_SECONDS="3600")
    now = int(time.time())
    status, body = await submit(gateway, _hs256(SECRET, iat=now - 10 * 3600, exp=now + 600))
    assert (status, body["error"]) == (401, "token_lifetime_too_long")


def test_a_maximum_token_lifetime_beyond_a_year_is_a_settings_error() -> None:
    from eco2.env import SettingsError
    from eco2.gateway.settings import GatewaySettings
    from eco2.settings import Settings

    env = {"ECO2_JWT_SECRET": SECRET, "ECO2_JWT_MAX_LIFETIME_SECONDS": str(2**62)}
    with pytest.raises(SettingsError, match="ECO2_JWT_MAX_LIFETIME_SECONDS"):
        GatewaySettings.from_env(env, Settings.from_env(env, "gateway"))
