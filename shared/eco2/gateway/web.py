"""The web page at /app: static files from eco2/gateway/static (nothing from a CDN), and, in development only,
a development token for whoever opens it (POST /app/dev-token)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from eco2.adapter import read_body
from eco2.errors import NotFound
from eco2.gateway import models
from eco2.gateway.context import GatewayContext
from eco2.gateway.tokens import DEV_JWT_SECRET, issue_token
from eco2.storage import origin

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
_NAME = re.compile(r"[a-z0-9_-]{1,40}\.(html|js|css)")
DEV_TOKEN_SECONDS = 24 * 3600
# The page loads only its own files, so nothing injected can run: no inline script, no framing (clickjacking),
# no sniffing a photo into a script. The photo store's origin is added to connect-src for the upload.
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'{store}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(store_origin: str | None, *, cache: str = "no-cache") -> dict[str, str]:
    return {
        "Content-Security-Policy": _POLICY.format(store=f" {store_origin}" if store_origin else ""),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": cache,
    }


def _store_origin(ctx: GatewayContext) -> str | None:
    """The store's origin as a browser writes it (no default port), for connect-src."""
    if ctx.storage is None:
        return None
    parts = urlsplit(ctx.storage.settings.base_url)
    return f"{parts.scheme}://{parts.netloc}" if origin(parts) else None


class DevTokenRequest(BaseModel):
    user: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class Web:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self._headers = security_headers(_store_origin(ctx))

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=self._headers)

    async def asset(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        path = STATIC / name
        if not _NAME.fullmatch(name) or not path.is_file():
            raise NotFound("not_found", f"no file {name}")
        return FileResponse(path, media_type=_TYPES[path.suffix], headers=self._headers)

    async def dev_token(self, request: Request) -> Response:
        """A token for a development user: only under ECO2_ENV=development with the built-in development secret,
        never a real one set beside it (else 404)."""
        settings = self.ctx.settings
        if not settings.development or settings.jwt_secret != DEV_JWT_SECRET or settings.jwt_public_key is not None:
            raise NotFound("not_found", "development tokens exist only under ECO2_ENV=development")
        wanted = models.parse_body(await read_body(request, 1024) or b"{}", DevTokenRequest)
        user = wanted.user or f"web-{uuid.uuid4().hex[:8]}"
        token = issue_token(
            user,
            settings.jwt_secret,
            DEV_TOKEN_SECONDS,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        return JSONResponse(
            {"token": token, "user": user, "expires_in": DEV_TOKEN_SECONDS},
            headers=security_headers(None, cache="no-store"),
        )


def web_routes(ctx: GatewayContext) -> list[Route]:
    web = Web(ctx)

    async def to_app(request: Request) -> Response:
        return RedirectResponse("/app", status_code=307)

    return [
        Route("/", to_app, methods=["GET"]),
        Route("/app", web.index, methods=["GET"]),
        Route("/app/static/{name}", web.asset, methods=["GET"]),
        Route("/app/dev-token", web.dev_token, methods=["POST"]),
    ]
