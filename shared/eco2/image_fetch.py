"""The stage's own fetch of an image_url the model is to read: every hop SSRF-checked, each connection made to the
addresses that check approved, the bytes handed to the model as a data URL.

Passing a checked URL on to the model left a gap: the model (self-hosted in this network, or any fetcher) resolves
the name again, and a name that answers a public address to the check and a private one a second later (DNS
rebinding) reached inside. Here the name is resolved once, by the check; the connection goes to that address (the
URL's host kept as the Host header and the TLS server name, so HTTPS certificates are verified against it), and
what the model receives cannot change after the check. Redirects are followed by hand, each hop checked and pinned
the same way; the body is capped and must be an image.

Allowlisted origins (the operator's own; the stand-in in development) and the photo store (a presigned GET) are not
fetched here: eco2.stage_context hands their URLs on as before.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from eco2.errors import BadRequest, TransientError
from eco2.ssrf import Address

MAX_REDIRECTS = 3
# Well under what model APIs take for one image (OpenAI: 20 MB), and bounded memory per delivery.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IMAGE_TYPES = ("image/",)

# The SSRF check of one hop (eco2.ssrf.check_image_url with the stage's allowlist): raises a 400, or gives the
# approved addresses (None for an allowlisted origin, fetched by name).
Check = Callable[[str], Awaitable[list[Address] | None]]


def _refused(code: str, message: str) -> BadRequest:
    return BadRequest(code, message)


class ImageFetcher:
    """One per stage process: `data_url(url)` fetches the image under the rules above."""

    def __init__(
        self,
        check: Check,
        *,
        timeout_seconds: float = 10.0,
        max_bytes: int = MAX_IMAGE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._check = check
        self._max_bytes = max_bytes
        # No proxies from the environment: a proxy would resolve the name itself, undoing the pinning.
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, trust_env=False, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def data_url(self, url: str) -> str:
        """`data:<image type>;base64,…` of the image behind `url`; a 400 for what may not or cannot be an image
        (poison), a 503 when the host does not answer (the broker retries)."""
        for _ in range(MAX_REDIRECTS + 1):
            addresses = await self._check(url)
            response = await self._open(url, addresses)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        status = response.status_code
                        raise _refused("image_unreachable", f"the image host answered {status} without a Location")
                    url = urljoin(url, location)
                    continue
                return await self._image(response)
            finally:
                await response.aclose()
        raise _refused("image_unreachable", f"image_url redirects more than {MAX_REDIRECTS} times")

    async def _open(self, url: str, addresses: list[Address] | None) -> httpx.Response:
        unpinned: list[tuple[str, dict[str, str], dict[str, str]]] = [(url, {}, {})]
        targets = unpinned if addresses is None else [pinned(url, address) for address in addresses]
        failure = "no address"
        for target, headers, extensions in targets:
            request = self._http.build_request("GET", target, headers=headers, extensions=extensions)
            try:
                return await self._http.send(request, stream=True)
            except httpx.TimeoutException:
                failure = "timed out"
            except httpx.TransportError as exc:
                failure = type(exc).__name__
        raise TransientError("image_unavailable", f"the image host could not be reached ({failure})")

    async def _image(self, response: httpx.Response) -> str:
        if not 200 <= response.status_code < 300:
            raise _refused("image_unreachable", f"the image host answered {response.status_code} for image_url")
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not content_type.startswith(_IMAGE_TYPES):
            said = content_type or "nothing"
            raise _refused("image_unreachable", f"image_url is not an image (the host says {said})")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _refused("image_too_large", f"the image is larger than {self._max_bytes} bytes")
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise _refused("image_too_large", f"the image is larger than {self._max_bytes} bytes")
        except httpx.TransportError:
            raise TransientError("image_unavailable", "the image host broke off the image") from None
        return f"data:{content_type};base64,{base64.b64encode(body).decode('ascii')}"


def pinned(url: str, address: Address) -> tuple[str, dict[str, str], dict[str, str]]:
    """`url` addressed to `address`, with the URL's host as the Host header and (https) the TLS server name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = f"{host}:{parts.port}" if parts.port else host
    if ":" in host:  # an IPv6 literal host keeps its brackets in the Host header
        host_header = f"[{host}]:{parts.port}" if parts.port else f"[{host}]"
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return target, {"Host": host_header}, extensions
