"""Gateway settings: auth, sink, limits and SSE knobs, read once at start from a mapping (the environment)."""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from eco2.env import SettingsError, env_float, env_int, environment_of
from eco2.gateway.tokens import DEV_JWT_SECRET
from eco2.settings import Settings
from eco2.ssrf import always_allowed, image_allowlist, origin_of, origins

__all__ = ["DEV_JWT_SECRET", "EdgeLimits", "GatewaySettings", "ImagePolicy", "origin_of"]

log = logging.getLogger("eco2.gateway")

# HS256 keys shorter than this are refused (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _previous_secret(secret: str | None) -> str | None:
    """The previous HS256 secret, held to the same minimum as the current one (else ignored, loudly)."""
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        log.error("ECO2_JWT_PREVIOUS_SECRET is shorter than %d bytes: ignored, its tokens refused", MIN_SECRET_BYTES)
        return None
    return secret


# A year: no token (and so no revocation) is kept longer, whatever is configured.
_LONGEST_TOKEN_SECONDS = 366 * 24 * 3600.0


def _max_lifetime(env: Mapping[str, str]) -> float:
    seconds = env_float(env, "ECO2_JWT_MAX_LIFETIME_SECONDS", GatewaySettings.jwt_max_lifetime_seconds, minimum=60)
    if seconds > _LONGEST_TOKEN_SECONDS:
        raise SettingsError(f"ECO2_JWT_MAX_LIFETIME_SECONDS must be at most {int(_LONGEST_TOKEN_SECONDS)}")
    return seconds


def _instance(raw: str | None) -> str:
    name = (raw or "").strip() or uuid.uuid4().hex[:12]
    if not _INSTANCE.fullmatch(name):
        raise SettingsError("ECO2_GATEWAY_INSTANCE must be 1-64 letters, digits, '-' or '_'")
    return name


@dataclass(frozen=True)
class ImagePolicy:
    """Which image URLs a submit accepts, and how their redirects are followed (eco2.gateway.probe)."""

    # Origins whose URLs may point into this network (development's stand-in, an internal image store).
    allowlist: frozenset[str] = frozenset()
    # Origins whose URLs are not followed at submit (the operator's own upload CDN): they never redirect.
    trusted: frozenset[str] = frozenset()
    # Follow other image URLs' redirects at submit, so one into this network is a 400.
    follow: bool = True
    timeout_seconds: float = 3.0
    dns_timeout_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], environment: str, base: Settings) -> ImagePolicy:
        allowlist = image_allowlist(env.get("ECO2_IMAGE_URL_ALLOWLIST"), environment, base)
        trusted = origins(env.get("ECO2_IMAGE_URL_TRUSTED")) | always_allowed(environment, base)
        return cls(
            allowlist,
            trusted,
            _bool(env, "ECO2_IMAGE_PROBE", default=True),
            env_float(env, "ECO2_IMAGE_PROBE_TIMEOUT_SECONDS", cls.timeout_seconds, minimum=0.05),
            env_float(env, "ECO2_DNS_TIMEOUT_SECONDS", cls.dns_timeout_seconds, minimum=0.05),
        )


IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# Where the cluster's own proxies live: loopback, the private ranges pods and nodes get, shared address space.
TRUSTED_PROXIES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "::1/128", "fc00::/7")
)


def _networks(listed: str | None) -> tuple[IPNetwork, ...]:
    """ECO2_TRUSTED_PROXY_CIDRS: comma-separated networks; unset means the private ranges above."""
    if listed is None or not listed.strip():
        return TRUSTED_PROXIES
    try:
        return tuple(ipaddress.ip_network(cidr.strip()) for cidr in listed.split(",") if cidr.strip())
    except ValueError:
        raise SettingsError("ECO2_TRUSTED_PROXY_CIDRS must be comma-separated networks (10.0.0.0/8,...)") from None


@dataclass(frozen=True)
class EdgeLimits:
    """Bounds per client address and per user beyond the per-user submit bucket (issue 26).

    The client's address is read from X-Forwarded-For: the proxies in front (the cluster ingress, Knative's
    activator and queue-proxy) each append the address they saw, and how many are in the path varies, so the
    client is the rightmost entry (the direct peer counted last) outside `trusted_proxies`; entries further left
    are the client's own claims and never used.
    """

    trusted_proxies: tuple[IPNetwork, ...] = TRUSTED_PROXIES
    # Per client address, for submits and chats: a NAT or household shares an address, so by default three
    # times the per-user bucket (scaled with it when that is raised).
    client_burst: int = 30
    client_per_second: float = 6.0
    # Concurrent SSE streams one user may hold, across every replica; one more is a 429.
    sse_streams_per_user: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str], user_burst: int, user_per_second: float) -> EdgeLimits:
        return cls(
            trusted_proxies=_networks(env.get("ECO2_TRUSTED_PROXY_CIDRS")),
            client_burst=env_int(env, "ECO2_CLIENT_RATE_LIMIT_BURST", 3 * user_burst, minimum=1),
            client_per_second=env_float(env, "ECO2_CLIENT_RATE_LIMIT_PER_SECOND", 3 * user_per_second, minimum=0.001),
            sse_streams_per_user=env_int(env, "ECO2_SSE_MAX_STREAMS_PER_USER", cls.sse_streams_per_user, minimum=1),
        )


@dataclass(frozen=True)
class GatewaySettings:
    base: Settings
    environment: str = "production"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    # Key rotation: tokens signed with the key being retired are still accepted until this is unset.
    jwt_previous_secret: str | None = None
    jwt_previous_public_key: str | None = None
    jwt_issuer: str = "eco2"
    jwt_audience: str = "eco2"
    jwt_leeway_seconds: float = 30.0
    # The longest life a token may claim (exp - iat, and exp - now): a longer one is refused, so a leaked
    # token cannot outlive this and a revocation never needs to be kept longer.
    jwt_max_lifetime_seconds: float = 7 * 24 * 3600.0
    # Why auth cannot work (shown in every 401), or None when it is configured.
    auth_problem: str | None = None
    trust_user_header: bool = False
    sink_url: str | None = None
    sink_timeout_seconds: float = 3.0
    # The outbox sweeper: how often it looks for due sends, and the capped exponential backoff between tries.
    outbox_sweep_seconds: float = 1.0
    outbox_backoff_seconds: float = 1.0
    outbox_backoff_cap_seconds: float = 30.0
    outbox_timeout_seconds: float = 5.0
    # Names this process's Redis connections (CLIENT LIST) and its SSE wake-up stream; random per process.
    instance: str = ""
    images: ImagePolicy = ImagePolicy()
    max_body_bytes: int = 16 * 1024
    rate_limit_burst: int = 10
    rate_limit_per_second: float = 2.0
    idempotency_ttl_seconds: int = 3600
    result_retry_after_seconds: int = 2
    sse_ping_seconds: float = 15.0
    sse_queue_size: int = 64
    sse_max_seconds: float = 600.0
    sse_block_ms: int = 5000
    sse_send_timeout_seconds: float = 30.0
    redis_max_connections: int = 20
    # How long a request waits for a free pooled connection before it answers 503: shorter than a function's
    # 30 s (eco2.connections), since a phone is waiting, not a broker that retries.
    redis_pool_wait_seconds: float = 5.0
    # What a 202 promises under Redis's asynchronous replication: with N > 0 the submit waits (at most the
    # timeout) until N replicas hold the job and its outbox entry, so a failover right after the 202 keeps them.
    # A replica that does not answer in time does not fail the submit (counted, logged): the primary has it.
    submit_wait_replicas: int = 0
    submit_wait_timeout_ms: int = 500
    edge: EdgeLimits = EdgeLimits()

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def outbox_send_timeout_seconds(self) -> float:
        """The sweeper's timeout per send: nobody waits on it, so never shorter than a submit's (a slow ingress
        answering every send just too late would otherwise be sent the same events again and again)."""
        return max(self.sink_timeout_seconds, self.outbox_timeout_seconds)

    @property
    def outbox_lease_seconds(self) -> float:
        """How long a claimed (or just written) outbox entry is left to its sender: a send and its retry, and more."""
        return 2 * self.outbox_send_timeout_seconds + 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], base: Settings) -> GatewaySettings:
        environment = environment_of(env)
        secret = env.get("ECO2_JWT_SECRET") or None
        public_key = env.get("ECO2_JWT_PUBLIC_KEY") or None
        problem = None
        if public_key is None and secret is None:
            if environment == "development":
                secret = DEV_JWT_SECRET
                log.warning("ECO2_ENV=development: tokens are checked with the built-in DEVELOPMENT secret")
            else:
                problem = "authentication is not configured on this gateway (ECO2_JWT_SECRET or ECO2_JWT_PUBLIC_KEY)"
        elif public_key is None and secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            problem = f"ECO2_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes, so no token is accepted"
        if problem:
            log.error("auth disabled: %s", problem)
        return cls(
            base=base,
            environment=environment,
            jwt_secret=secret,
            jwt_public_key=public_key,
            jwt_previous_secret=_previous_secret(env.get("ECO2_JWT_PREVIOUS_SECRET") or None),
            jwt_previous_public_key=env.get("ECO2_JWT_PREVIOUS_PUBLIC_KEY") or None,
            jwt_issuer=env.get("ECO2_JWT_ISSUER") or cls.jwt_issuer,
            jwt_audience=env.get("ECO2_JWT_AUDIENCE") or cls.jwt_audience,
            jwt_leeway_seconds=env_float(env, "ECO2_JWT_LEEWAY_SECONDS", cls.jwt_leeway_seconds),
            jwt_max_lifetime_seconds=_max_lifetime(env),
            auth_problem=problem,
            trust_user_header=_bool(env, "ECO2_TRUST_USER_HEADER"),
            sink_url=(env.get("K_SINK") or "").strip() or None,
            sink_timeout_seconds=env_float(env, "ECO2_SINK_TIMEOUT_SECONDS", cls.sink_timeout_seconds, minimum=0.05),
            outbox_sweep_seconds=env_float(env, "ECO2_OUTBOX_SWEEP_SECONDS", cls.outbox_sweep_seconds, minimum=0.01),
            outbox_backoff_seconds=env_float(
                env, "ECO2_OUTBOX_BACKOFF_SECONDS", cls.outbox_backoff_seconds, minimum=0.01
            ),
            outbox_backoff_cap_seconds=env_float(env, "ECO2_OUTBOX_BACKOFF_CAP_SECONDS", 30.0, minimum=0.01),
            outbox_timeout_seconds=env_float(
                env, "ECO2_OUTBOX_TIMEOUT_SECONDS", cls.outbox_timeout_seconds, minimum=0.05
            ),
            instance=_instance(env.get("ECO2_GATEWAY_INSTANCE")),
            images=ImagePolicy.from_env(env, environment, base),
            max_body_bytes=env_int(env, "ECO2_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            rate_limit_burst=env_int(env, "ECO2_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1),
            rate_limit_per_second=env_float(
                env, "ECO2_RATE_LIMIT_PER_SECOND", cls.rate_limit_per_second, minimum=0.001
            ),
            idempotency_ttl_seconds=env_int(
                env, "ECO2_IDEMPOTENCY_TTL_SECONDS", cls.idempotency_ttl_seconds, minimum=1
            ),
            result_retry_after_seconds=env_int(env, "ECO2_RESULT_RETRY_AFTER_SECONDS", 2, minimum=1),
            sse_ping_seconds=env_float(env, "ECO2_SSE_PING_SECONDS", cls.sse_ping_seconds, minimum=0.05),
            sse_queue_size=env_int(env, "ECO2_SSE_QUEUE_SIZE", cls.sse_queue_size, minimum=1),
            sse_max_seconds=env_float(env, "ECO2_SSE_MAX_SECONDS", cls.sse_max_seconds, minimum=1),
            sse_block_ms=env_int(env, "ECO2_SSE_BLOCK_MS", cls.sse_block_ms, minimum=10),
            sse_send_timeout_seconds=env_float(env, "ECO2_SSE_SEND_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            redis_max_connections=env_int(env, "ECO2_REDIS_MAX_CONNECTIONS", cls.redis_max_connections, minimum=2),
            redis_pool_wait_seconds=env_float(
                env, "ECO2_REDIS_POOL_WAIT_SECONDS", cls.redis_pool_wait_seconds, minimum=0.1
            ),
            submit_wait_replicas=env_int(env, "ECO2_SUBMIT_WAIT_REPLICAS", cls.submit_wait_replicas, minimum=0),
            submit_wait_timeout_ms=env_int(env, "ECO2_SUBMIT_WAIT_TIMEOUT_MS", cls.submit_wait_timeout_ms, minimum=1),
            edge=EdgeLimits.from_env(
                env,
                env_int(env, "ECO2_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1),
                env_float(env, "ECO2_RATE_LIMIT_PER_SECOND", cls.rate_limit_per_second, minimum=0.001),
            ),
        )
