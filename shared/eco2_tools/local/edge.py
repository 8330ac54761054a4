"""The cluster ingress's authz check, played by the runner on the gateway's public port.

What Istio's ingress does with the pack's CUSTOM AuthorizationPolicy and its `envoyExtAuthzHttp` provider
(deploy/components/edge-authz): every request to a checked path is first sent to authz as a check (the original
method, `CHECK_PATH_PREFIX` + the original path, the original headers, no body); a 200 lets it through with the
headers authz added (`UPSTREAM_HEADERS`) set on it, any other answer is what the client gets (authz's status,
headers and body); authz unreachable, timing out or answering 5xx refuses it with `STATUS_ON_ERROR` (the
provider fails closed). The paths in `UNCHECKED_PATHS` go straight to the gateway, as the policy's `notPaths`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from eco2.adapter import read_body
from eco2.errors import Eco2Error, error_response
from eco2_tools.local.dispatcher import Endpoint
from eco2_tools.local.metrics import RunnerMetrics

log = logging.getLogger("eco2_tools.local.edge")

# What needs no identity: probes, the web page and its files (it gets its token itself), the development token
# (only under ECO2_ENV=development, refused otherwise by the gateway) and the two anonymous reads of the mobile
# API (the categories and the character catalog). Istio path syntax: an exact path, or a prefix ending in `*`.
# Everything else, unknown paths included, is checked: a route added to the gateway is protected by default.
UNCHECKED_PATHS: tuple[str, ...] = (
    "/healthz",
    "/readyz",
    "/",
    "/app",
    "/app/static/*",
    "/app/dev-token",
    "/api/v1/scan/categories",
    "/api/v1/characters",
)
# The check goes to authz under this prefix, so a client's own /healthz or /readyz can never be mistaken for
# authz's probes (which answer 200).
CHECK_PATH_PREFIX = "/check"
# What the check carries beside the path and method: Envoy always sends Authorization and Host, and the provider's
# includeRequestHeadersInCheck adds these (authz's log lines and traces join the request's).
CHECK_HEADERS: tuple[str, ...] = ("authorization", "host", "traceparent", "x-request-id")
# What authz adds for the gateway (set upstream, replacing whatever the client sent under those names).
UPSTREAM_HEADERS: tuple[str, ...] = ("x-user-id", "x-user-role")
# The provider's statusOnError: authz unreachable is a refusal, never a pass.
STATUS_ON_ERROR = 403
CHECK_TIMEOUT_SECONDS = 1.0
# The mobile API's bodies are small JSON (photos go straight to the store): the edge buffers at most this much.
MAX_BODY_BYTES = 1024 * 1024
# Per hop, never forwarded (RFC 9110 7.6.1), plus the framing aiohttp and uvicorn set themselves.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

Endpoints = Callable[[str], Awaitable[Endpoint]]


def is_checked(path: str) -> bool:
    """Whether the ingress asks authz before a request to `path` reaches the gateway."""
    for pattern in UNCHECKED_PATHS:
        if pattern.endswith("*") and path.startswith(pattern[:-1]):
            return False
        if path == pattern:
            return False
    return True


def _forwardable(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]


class Edge:
    """The ASGI app on the gateway's public port: check with authz where the policy says, then proxy."""

    def __init__(self, endpoints: Endpoints, http: aiohttp.ClientSession, metrics: RunnerMetrics) -> None:
        self._endpoints = endpoints
        self._http = http
        self._metrics = metrics
        self._check_timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS)
        # The gateway's own budget decides how long a request may take (an SSE stream lives for minutes).
        self._upstream_timeout = aiohttp.ClientTimeout(total=None, connect=10.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not part of the mobile API
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        # A client never names the caller: the identity headers come from authz or not at all.
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in UPSTREAM_HEADERS]
        if is_checked(request.url.path):
            verdict = await self._check(request)
            if isinstance(verdict, Response):
                return verdict
            headers += verdict
        else:
            self._metrics.edge_checks.labels("unchecked").inc()
        client = request.client.host if request.client else ""
        forwarded = request.headers.get("x-forwarded-for")
        headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
        headers.append(("x-forwarded-for", f"{forwarded}, {client}" if forwarded else client))
        return await self._proxy(request, headers)

    async def _check(self, request: Request) -> Response | list[tuple[str, str]]:
        """The headers to add upstream when authz allows; otherwise the response the client gets."""
        path = CHECK_PATH_PREFIX + request.url.path
        if request.url.query:
            path += f"?{request.url.query}"
        try:
            endpoint = await self._endpoints("authz")
        except LookupError:
            return self._refuse("error", "authz is not running")
        try:
            async with self._http.request(
                request.method,
                endpoint.url + path,
                headers={name: value for name, value in request.headers.items() if name.lower() in CHECK_HEADERS},
                timeout=self._check_timeout,
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                status, answer_headers = answer.status, list(answer.headers.items())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._refuse("error", f"authz did not answer: {type(exc).__name__}")
        finally:
            endpoint.release()
        if status == 200:
            self._metrics.edge_checks.labels("allowed").inc()
            wanted = {name.lower(): value for name, value in answer_headers if name.lower() in UPSTREAM_HEADERS}
            return list(wanted.items())
        if status >= 500:
            return self._refuse("error", f"authz answered {status}")
        self._metrics.edge_checks.labels("denied").inc()
        return Response(body, status_code=status, headers=dict(_forwardable(answer_headers)))

    def _refuse(self, outcome: str, why: str) -> Response:
        self._metrics.edge_checks.labels(outcome).inc()
        log.warning("edge check failed closed", extra={"fields": {"reason": why}})
        body = {"error": "authz_unavailable", "message": "the request could not be authorized"}
        return JSONResponse(body, status_code=STATUS_ON_ERROR)

    async def _proxy(self, request: Request, headers: list[tuple[str, str]]) -> Response:
        try:
            endpoint = await self._endpoints("gateway")
        except LookupError:
            return JSONResponse({"error": "no_upstream", "message": "the gateway is not running"}, 503)
        url = endpoint.url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except Eco2Error as exc:
            endpoint.release()
            return error_response(exc)
        try:
            upstream = await self._http.request(
                request.method,
                url,
                headers=_forwardable(headers),
                data=body or None,
                timeout=self._upstream_timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            endpoint.release()
            why = {"error": "upstream_unavailable", "message": f"the gateway did not answer: {type(exc).__name__}"}
            return JSONResponse(why, 502)

        raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _forwardable(upstream.headers.items())
        ]
        if upstream.headers.get("content-length") is not None:
            # A sized answer (every one but an SSE stream) is passed on whole: a streamed relay costs more CPU.
            try:
                content = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = {"error": "upstream_unavailable", "message": f"the gateway's answer broke: {type(exc).__name__}"}
                return JSONResponse(why, 502)
            finally:
                upstream.release()
                endpoint.release()
            whole = Response(content, status_code=upstream.status)
            whole.raw_headers = [*raw_headers, (b"content-length", str(len(content)).encode())]
            return whole

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()
                endpoint.release()

        streamed = StreamingResponse(relay(), status_code=upstream.status)
        streamed.raw_headers = raw_headers
        return streamed
