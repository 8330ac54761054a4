"""Follows an image_url's redirects before the scan is accepted, so a redirect into this network is a 400.

Each hop is checked like the submitted URL (form, every resolved address), and the connection goes to the
addresses that were checked: the probe's resolver answers from them instead of asking DNS again, so a name
that re-resolves to a private address between the check and the connect (DNS rebinding) is never reached.
Only headers are read (HEAD, or a one-byte ranged GET when HEAD is refused); the body is never downloaded.

Origins the operator trusts (its own upload CDN; the stand-in's samples in development) skip the probe:
their URLs do not redirect, and the probe's round trip would sit on every submit's path.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from eco2.errors import BadRequest
from eco2.gateway.settings import ImagePolicy, origin_of
from eco2.ssrf import Address, Resolver, check_image_url, resolve_host

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What an image host answers: an image type, or a generic binary type some object stores use.
_IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
_PINNED_HOSTS = 4096


def _unreachable(message: str) -> BadRequest:
    return BadRequest("image_unreachable", message)


class PinnedResolver(AbstractResolver):
    """Answers with the addresses the SSRF check approved for a host; asks DNS only for allowlisted origins."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self._approved: OrderedDict[str, list[Address]] = OrderedDict()

    def approve(self, host: str, addresses: list[Address]) -> None:
        self._approved[host.lower()] = addresses
        self._approved.move_to_end(host.lower())
        while len(self._approved) > _PINNED_HOSTS:
            self._approved.popitem(last=False)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        approved = self._approved.get(host.lower())
        raw = [str(a) for a in approved] if approved is not None else await self._resolve(host, port)
        return [_result(host, address, port) for address in raw]

    async def close(self) -> None:
        self._approved.clear()


def _result(hostname: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(hostname=hostname, host=address, port=port, family=family, proto=0, flags=0)


class ImageProbe:
    """One per gateway process; `check` raises a 400 or returns once the URL leads to an image."""

    def __init__(self, policy: ImagePolicy, resolve: Resolver = resolve_host) -> None:
        self.policy = policy
        self._resolve = resolve
        self._resolver = PinnedResolver(resolve)
        # Created inside the running loop (the gateway's start), as aiohttp requires.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False, limit=50),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=policy.timeout_seconds),
            headers={"User-Agent": "eco2-gateway image check"},
        )

    async def aclose(self) -> None:
        await self._session.close()

    def trusts(self, url: str) -> bool:
        return origin_of(url) in self.policy.trusted

    async def check(self, url: str) -> None:
        """Check the URL; unless its origin is trusted (or following is off), follow it to the image."""
        await self._check_hop(url)
        if not self.policy.follow or self.trusts(url):
            return
        for _ in range(MAX_REDIRECTS + 1):
            status, location, content_type = await self._head(url)
            if status not in _REDIRECTS:
                return _final(status, content_type)
            if not location:
                raise _unreachable(f"the image host answered {status} without a Location")
            url = urljoin(url, location)
            await self._check_hop(url, redirect=True)
        raise _unreachable(f"image_url redirects more than {MAX_REDIRECTS} times")

    async def _check_hop(self, url: str, *, redirect: bool = False) -> None:
        try:
            addresses = await check_image_url(
                url, allowlist=self.policy.allowlist, resolve=self._resolve, timeout=self.policy.dns_timeout_seconds
            )
        except BadRequest as exc:
            if not redirect:
                raise
            raise BadRequest(exc.code, f"image_url redirects somewhere not allowed: {exc.message}") from None
        host = urlsplit(url).hostname
        if addresses is not None and host:
            self._resolver.approve(host, addresses)

    async def _head(self, url: str) -> tuple[int, str | None, str]:
        """Status, Location and Content-Type of `url`, without its body."""
        try:
            async with self._session.head(url, allow_redirects=False) as response:
                if response.status not in (405, 501):
                    return response.status, response.headers.get("Location"), response.content_type
            ranged = {"Range": "bytes=0-0"}
            async with self._session.get(url, allow_redirects=False, headers=ranged) as response:
                return response.status, response.headers.get("Location"), response.content_type
        except TimeoutError:
            raise _unreachable(f"the image host did not answer within {self.policy.timeout_seconds:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _unreachable(f"the image host could not be reached ({type(exc).__name__})") from None


def _final(status: int, content_type: str) -> None:
    if not 200 <= status < 300:
        raise _unreachable(f"the image host answered {status} for image_url")
    if content_type and not content_type.lower().startswith(_IMAGE_TYPES):
        raise _unreachable(f"image_url is not an image (the host says {content_type})")
