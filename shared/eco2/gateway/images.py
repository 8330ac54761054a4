"""POST /api/v1/images: a presigned upload of one photo to the photo store (eco2.storage), under the caller's prefix.

The answer's `image_url` is what the app sends to /api/v1/scan or /api/v1/chat once the upload succeeded; a
URL into the store outside the caller's prefix is refused there (403 `image_not_yours`,
`owned_image_url`), and a store URL is passed on only in its canonical form.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2.adapter import read_body
from eco2.errors import Eco2Error
from eco2.gateway import models
from eco2.gateway.auth import Principal
from eco2.gateway.context import GatewayContext


def owned_image_url(ctx: GatewayContext, image_url: str, principal: Principal) -> str:
    """The URL to pass on: a photo store URL in its canonical form, if it is the caller's upload (else 403/400);
    any other URL unchanged (the SSRF check and probe judge it)."""
    return image_url if ctx.storage is None else ctx.storage.owned_url(image_url, principal.user_id)


_CONFIG = "S3_ENDPOINT_URL, ECO2_S3_BUCKET"


class Images:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    async def presign(self, request: Request) -> Response:
        principal = await self.ctx.auth.authenticate(request)
        wanted = models.parse_body(
            await read_body(request, self.ctx.settings.max_body_bytes), models.ImageUploadRequest
        )
        if self.ctx.storage is None:
            raise Eco2Error(
                "uploads_unavailable", "no photo store is configured (S3_ENDPOINT_URL, ECO2_S3_BUCKET)", status=503
            )
        upload = self.ctx.storage.presign_upload(principal.user_id, wanted.content_type, wanted.size)
        return JSONResponse(models.ImageUpload.model_validate(upload).model_dump(mode="json"), status_code=201)
