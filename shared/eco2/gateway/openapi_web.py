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
    (models.ChatRequest, "validation"),
    (models.ChatAccepted, "serialization"),
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
        "/api/v1/chat": {"post": _chat(ref, json, error, bearer, auth)},
        "/api/v1/chat/{job_id}/events": {
            "get": {
                "operationId": "streamChat",
                "summary": "SSE: the answer as `delta` events (its pieces, in order), then `chat` (status done)",
                "security": bearer,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **auth,
                    "404": error("no such job (or not the caller's)"),
                },
            }
        },
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}


def _chat(
    ref: Ref, json: Json, error: Callable[[str], dict[str, Any]], bearer: list[Any], auth: dict[str, Any]
) -> dict[str, Any]:
    return {
        "operationId": "chat",
        "summary": "Ask the assistant; answers at once with the stream the reply grows on",
        "description": "Same auth, rate limit and X-Idempotency-Key as a scan. The reply is grounded in the rule "
        "book (the rule for the item asked about); the session's history is kept for a day.",
        "security": bearer,
        "parameters": [
            {
                "name": "X-Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref(models.ChatRequest)}}},
        "responses": {
            "202": json(ref(models.ChatAccepted), "accepted (queued)"),
            "400": error("bad JSON, image_url refused, bad idempotency key"),
            **auth,
            "403": error("image_url is another user's upload"),
            "413": error("body larger than 16 KiB"),
            "422": error("wrong field types, or an idempotency key reused for another request"),
            "429": error("per-user rate limit"),
            "503": error("the job store is unreachable, or no broker is configured"),
        },
    }
