"""image_url checks, wherever a URL is about to be fetched (the gateway's submit, vision, chat): http(s) only, at
most 2 KiB, and never pointing into this network (SSRF) unless its origin is allowlisted.

This module checks one URL: its form, and every address its host resolves to. Following the URL's redirects
(each hop checked again, connections pinned to the checked addresses) is `eco2.gateway.probe`'s job.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Collection
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from eco2.errors import BadRequest
from eco2.settings import Settings

MAX_URL_LENGTH = 2048
_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")
_METADATA = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
_HEX, _OCTAL, _DECIMAL = re.compile(r"0[xX][0-9a-fA-F]*"), re.compile(r"0[0-7]+"), re.compile(r"[0-9]+")

Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _bad(message: str) -> BadRequest:
    return BadRequest("invalid_image_url", message)


# The stand-in model server's default sample origin, allowlisted in development.
STANDIN_ORIGIN = "http://127.0.0.1:8090"


def origin_of(url: str) -> str | None:
    """`scheme://host:port` with the default port spelled out, lower-cased; None when not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def origins(listed: str | None) -> frozenset[str]:
    """A comma-separated list of URLs or origins, as normalised origins."""
    return frozenset(o for o in (origin_of(x) for x in (listed or "").split(",")) if o)


def always_allowed(environment: str, base: Settings) -> frozenset[str]:
    """The development stand-in (it serves the sample images), and the photo store's own URLs (checked for
    ownership by eco2.storage, read through a presigned GET)."""
    allowed: frozenset[str] = frozenset()
    if environment == "development":
        allowed |= origins(f"{STANDIN_ORIGIN},{base.openai_base_url}")
    if base.storage is not None:
        allowed |= origins(base.storage.base_url)
    return allowed


def image_allowlist(configured: str | None, environment: str, base: Settings) -> frozenset[str]:
    """Origins whose image URLs may point into this network: ECO2_IMAGE_URL_ALLOWLIST and the always allowed."""
    return origins(configured) | always_allowed(environment, base)


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (what a fetcher on this network would reach)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def legacy_ipv4(host: str) -> IPv4Address | None:
    """The address libc and browsers read from numeric forms: 2130706433, 0x7f000001, 0177.0.0.1, 127.1."""
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if _HEX.fullmatch(part):
            values.append(int(part[2:] or "0", 16))
        elif _OCTAL.fullmatch(part):
            values.append(int(part, 8))
        elif _DECIMAL.fullmatch(part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number * 256 + value
    return IPv4Address((number << (8 * (4 - len(head)))) | last)


def literal_address(host: str) -> Address | None:
    """The host as an IP address when it is one (IPv6 without its zone, any IPv4 spelling), else None."""
    try:
        return ip_address(host.split("%", 1)[0])
    except ValueError:
        return legacy_ipv4(host)


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    # IPv4-mapped, NAT64 and 6to4 addresses reach the IPv4 address inside them.
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def blocked_reason(ip: Address) -> str | None:
    """Why a fetch of this address must not happen, or None for a public unicast address."""
    if isinstance(ip, IPv6Address):
        inner = _embedded_ipv4(ip)
        reason = blocked_reason(inner) if inner is not None else None
        if reason:
            return reason
    checks: tuple[tuple[bool, str], ...] = (
        (ip in _METADATA, "a cloud metadata address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, IPv4Address) and ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "a non-public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


async def check_image_url(
    url: str, *, allowlist: Collection[str], resolve: Resolver = resolve_host, timeout: float = 2.0
) -> list[Address] | None:
    """Raise a 400 `invalid_image_url` naming the problem, or return the host's checked addresses when the URL
    may be fetched (None for an allowlisted origin, which is not resolved)."""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL_LENGTH:
        raise _bad(f"image_url is longer than {MAX_URL_LENGTH} bytes")
    if "\\" in url or any(c.isspace() or not c.isprintable() for c in url):
        raise _bad("image_url must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad("image_url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad("image_url must be an http or https URL")
    if "@" in parts.netloc:
        raise _bad("image_url must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise _bad("image_url has no host")
    if origin_of(url) in allowlist:
        return None
    literal = literal_address(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        addresses = await _resolved(host, port or (443 if parts.scheme.lower() == "https" else 80), resolve, timeout)
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise _bad(f"image_url must point to a public host; {host} is {reason}")
    return addresses


async def _resolved(host: str, port: int, resolve: Resolver, timeout: float) -> list[Address]:
    try:
        async with asyncio.timeout(timeout):
            raw = await resolve(host, port)
    except TimeoutError:
        raise _bad(f"the image host {host} did not resolve in time") from None
    except (OSError, UnicodeError):
        raise _bad(f"the image host {host} does not resolve") from None
    addresses = [a for a in (literal_address(r) for r in raw) if a is not None]
    if not addresses or len(addresses) != len(raw):
        raise _bad(f"the image host {host} does not resolve to usable addresses")
    return addresses
