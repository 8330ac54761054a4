"""Minting the gateway's bearer tokens (`eco2 token`, the tests): light to import, PyJWT only when a token is signed."""

from __future__ import annotations

import time
import uuid
from typing import Any

# Used only when ECO2_ENV=development and no key is configured; logged loudly at start.
DEV_JWT_SECRET = "eco2-development-secret-do-not-use-in-production"  # noqa: S105


def issue_token(
    sub: str,
    secret: str,
    ttl: float,
    priority: str | None = None,
    *,
    algorithm: str = "HS256",
    issuer: str = "eco2",
    audience: str = "eco2",
    now: float | None = None,
) -> str:
    """A signed token with the claims the gateway requires; `secret` is a PEM private key for RS256."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": issued,
        "exp": issued + int(ttl),
        "jti": uuid.uuid4().hex,
        "iss": issuer,
        "aud": audience,
    }
    if priority:
        claims["priority"] = priority
    import jwt

    return jwt.encode(claims, secret, algorithm=algorithm)
