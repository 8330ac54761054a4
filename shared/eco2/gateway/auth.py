"""Who is calling: a Bearer JWT (HS256 or RS256) or, behind a trusted edge, X-User-ID; revoked tokens are refused.

The revocation check is the process's Blacklist (eco2.cachesync): a local copy kept current from the fanout
exchange, Redis only while the broker is unreachable. The authz function runs this same check for Envoy.
PyJWT and cryptography are imported when the first Authenticator is built, not with this module.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from eco2.cachesync.blacklist import Blacklist
from eco2.errors import BadRequest, Eco2Error
from eco2.events import Priority
from eco2.gateway.settings import GatewaySettings
from eco2.gateway.tokens import issue_token

__all__ = ["Authenticator", "Principal", "issue_token", "priority_of"]

USER_ID_MAX = 128
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
_HIGH_PRIORITY_CLAIMS = frozenset({"vip", "high"})
DEFAULT_ROLE = "user"
# A mobile client sends the same token with every request: its signature and claims are checked once, and
# only its expiry again (revocation is checked on every request). Tokens are the keys, so a forged one misses.
_VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    priority: Priority
    jti: str | None = None  # None when the caller was identified by a trusted edge header
    expires_at: float | None = None
    role: str = DEFAULT_ROLE


def priority_of(claim: object) -> Priority:
    """A `priority: vip` (or `high`) claim routes the user's scans on the high-priority path."""
    return Priority.HIGH if isinstance(claim, str) and claim.lower() in _HIGH_PRIORITY_CLAIMS else Priority.NORMAL


def _unauthorized(code: str, message: str) -> Eco2Error:
    challenge = 'Bearer realm="eco2"' if code == "missing_token" else 'Bearer realm="eco2", error="invalid_token"'
    return Eco2Error(code, message, status=401, headers={"WWW-Authenticate": challenge})


def _plain(value: str) -> bool:
    return 0 < len(value) <= USER_ID_MAX and value.isprintable() and value.strip() == value


class Authenticator:
    """Checks each request's identity; one per process, built at start."""

    def __init__(self, settings: GatewaySettings, blacklist: Blacklist) -> None:
        self._settings = settings
        self.blacklist = blacklist
        self._problem = settings.auth_problem
        self._key: Any = settings.jwt_secret
        self._algorithm = "HS256"
        if settings.jwt_public_key:
            self._algorithm = "RS256"
            self._key = _public_key(settings.jwt_public_key)
            if self._key is None:
                self._problem = "ECO2_JWT_PUBLIC_KEY is not a valid PEM public key, so no token is accepted"
        # The key being retired (rotation): asked only when the current one finds the signature wrong, and
        # only of the current family, so configuring RS256 really ends HS256 tokens.
        self._previous: tuple[Any, str] | None = None
        if self._algorithm == "RS256" and settings.jwt_previous_public_key:
            previous = _public_key(settings.jwt_previous_public_key)
            self._previous = None if previous is None else (previous, "RS256")
        elif self._algorithm == "HS256" and settings.jwt_previous_secret:
            self._previous = (settings.jwt_previous_secret, "HS256")
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def algorithm(self) -> str:
        return self._algorithm

    async def authenticate(self, request: Request) -> Principal:
        if self._settings.trust_user_header and "x-user-id" in request.headers:
            user = request.headers["x-user-id"]
            if not _plain(user):
                raise _unauthorized("invalid_user", f"X-User-ID must be 1-{USER_ID_MAX} printable characters")
            return Principal(user, priority_of(request.headers.get("x-user-priority")))
        if self._problem is not None:
            raise _unauthorized("auth_not_configured", self._problem)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("missing_token", "send the header Authorization: Bearer <token>")
        claims = self._decode(token.strip())
        principal = Principal(
            user_id=claims["sub"],
            priority=priority_of(claims.get("priority")),
            jti=str(claims["jti"]),
            expires_at=float(claims["exp"]),
            role=_role(claims.get("role")),
        )
        if await self.blacklist.is_revoked(principal.jti or ""):
            raise _unauthorized("token_revoked", "the token was revoked (logged out)")
        if await self.blacklist.is_user_revoked(principal.user_id, float(claims["iat"])):
            raise _unauthorized("token_revoked", "the user's tokens issued until now were revoked: sign in again")
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        """The token's claims; a token verified before is not verified again until it expires."""
        cached = self._verified.get(token)
        if cached is not None and float(cached["exp"]) + self._settings.jwt_leeway_seconds > time.time():
            return cached
        claims = self._verify(token)
        self._verified[token] = claims
        while len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            try:
                claims = self._claims(token, self._key, self._algorithm)
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
                if self._previous is None:
                    raise
                claims = self._claims(token, *self._previous)
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages name the failed check (signature, claim) and never carry the key.
            raise _unauthorized("invalid_token", f"the token is not valid: {str(exc)[:200]}") from None
        self._check_lifetime(claims)
        if not isinstance(claims.get("sub"), str) or not _plain(claims["sub"]):
            raise _unauthorized("invalid_token", f"the token's sub must be 1-{USER_ID_MAX} printable characters")
        if not isinstance(claims.get("jti"), str) or not _plain(claims["jti"]):
            raise _unauthorized("invalid_token", "the token's jti must be a short string")
        return claims

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse a token meant to live longer than the maximum, by its own claims or from now."""
        limit = self._settings.jwt_max_lifetime_seconds + self._settings.jwt_leeway_seconds
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
            remaining = float(claims["exp"]) - time.time()
        except (TypeError, ValueError, OverflowError):
            raise _unauthorized("invalid_token", "the token's exp and iat must be numbers") from None
        if lifetime > limit or remaining > limit:
            seconds = int(self._settings.jwt_max_lifetime_seconds)
            raise _unauthorized("token_lifetime_too_long", f"tokens may live at most {seconds} s")

    def _claims(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        import jwt

        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=self._settings.jwt_issuer,
            audience=self._settings.jwt_audience,
            leeway=self._settings.jwt_leeway_seconds,
            options={"require": list(REQUIRED_CLAIMS)},
        )
        return claims

    async def revoke(self, principal: Principal) -> bool:
        """Blacklist the caller's token for the rest of its lifetime (logout); True if every replica was told."""
        if principal.jti is None or principal.expires_at is None:
            raise BadRequest("no_token", "only a bearer token can be revoked; this request carried none")
        # Clamped: a revocation need not outlive the longest life a token is allowed.
        until = min(principal.expires_at, time.time() + self._settings.jwt_max_lifetime_seconds)
        return await self.blacklist.revoke(principal.jti, principal.user_id, until)


def _public_key(text: str) -> Any:
    """A PEM public key from one env value (pasted into one line it often arrives with literal "\\n"), or None."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(text.replace("\\n", "\n").strip().encode())
    except (ValueError, TypeError):
        return None


def _role(claim: object) -> str:
    return claim if isinstance(claim, str) and _plain(claim) and len(claim) <= 32 else DEFAULT_ROLE
