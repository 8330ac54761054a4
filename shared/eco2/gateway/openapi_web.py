"""The OpenAPI paths of what the web page and the app use beside scans: photo uploads (and chat)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from eco2.gateway import models

Ref = Callable[[type[BaseModel]], dict[str, str]]
Json = Callable[..., dict[str, Any]]

# Models these paths add to the document's schemas.
MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (models.ImageUploadRequest, "validation"),
    (models.ImageUpload, "serialization"),
    (models.PresignedUpload, "serialization"),
]


def web_paths(ref: Ref, json: Json, error: Callable[[str], dict[str, Any]], bearer: list[Any]) -> dict[str, Any]:
    auth = {"401": error("missing, invalid, expired or revoked credentials")}
    return {
        "/api/v1/images": {
            "post": {
                "operationId": "presignImageUpload",
                "summary": "A presigned upload of one photo to the photo store; send its image_url to /scan",
                "description": "POST `upload.fields` and then the photo as `file` (multipart/form-data) to "
                "`upload.url`. The store refuses another content type, a larger file or another key. "
                "Types: image/jpeg, image/png, image/webp, image/heic; at most 10 MiB.",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref(models.ImageUploadRequest)}},
                },
                "responses": {
                    "201": json(ref(models.ImageUpload), "presigned"),
                    "400": error("bad JSON, a type other than jpeg/png/webp/heic, or a size outside 1 B-10 MiB"),
                    **auth,
                    "413": error("body larger than 16 KiB"),
                    "422": error("wrong field types"),
                    "503": error("no photo store is configured"),
                },
            }
        },
    }
