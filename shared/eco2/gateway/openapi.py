"""The gateway's OpenAPI 3.1 document, generated: schemas from the pydantic models (eco2.gateway.models), paths here.

Served at /openapi.json and kept in the repo as openapi.json (a test keeps the two equal). After a change:
`python -m eco2.gateway.openapi --write` (or without `--write`: print it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from eco2.gateway import models, openapi_web

REPO_FILE = Path(__file__).resolve().parents[3] / "openapi.json"

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (models.ScanRequest, "validation"),
    *(
        (model, "serialization")
        for model in (
            models.ErrorBody,
            models.ScanAccepted,
            models.ScanProgress,
            models.ScanResult,
            models.JobState,
            models.Category,
            models.CharacterList,
            models.CharacterCollection,
            models.ScanHistoryPage,
            models.Health,
            models.Readiness,
        )
    ),
    *openapi_web.MODELS,
]

_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {"userHeader": []}]
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref(models.ErrorBody), description, headers)


_AUTH_ERRORS = {
    "401": _error("missing, invalid, expired or revoked credentials, or a token meant to live beyond the maximum")
}
_JOB_ERRORS = {**_AUTH_ERRORS, "404": _error("no such job (or not the caller's)")}
_STORE_DOWN = {"503": _error("the job store is unreachable")}


def _submit() -> dict[str, Any]:
    return {
        "operationId": "submitScan",
        "summary": "Submit a photo; answers at once with the job's stream and result URLs",
        "description": "202 means the scan is durable: its job and its pending send to the broker were written "
        "in one step, and the send is retried until the broker takes it.",
        "security": _BEARER,
        "parameters": [
            {
                "name": "X-Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a repeat with the same key (per user) returns the same job",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(models.ScanRequest)}}},
        "responses": {
            "202": _json(_ref(models.ScanAccepted), "accepted (queued)"),
            "400": _error(
                "bad JSON, image_url refused (unsafe, redirects into this network, or not an image; a photo store "
                "URL not exactly as POST /api/v1/images gave it: image_url_not_canonical), unknown model, bad "
                "idempotency key"
            ),
            **_AUTH_ERRORS,
            "403": _error("image_url names another user's upload (image_not_yours)"),
            "413": _error("body larger than 16 KiB"),
            "422": _error("wrong field types, or an idempotency key reused for another request"),
            "429": _error("per-user or per-client-address rate limit", _RETRY_AFTER),
            "503": _error(
                "the job store is unreachable (nothing was created), or no broker is configured", _RETRY_AFTER
            ),
        },
    }


_DATABASE_DOWN = {"503": _error("the rewards database is unreachable", _RETRY_AFTER)}


def _mine() -> dict[str, Any]:
    return {
        "/api/v1/me/characters": {
            "get": {
                "operationId": "listMyCharacters",
                "summary": "The caller's characters, with when each was acquired (oldest first); the default one is"
                " granted on the first read",
                "security": _BEARER,
                "responses": {
                    "200": _json(_ref(models.CharacterCollection), "the collection"),
                    **_AUTH_ERRORS,
                    **_DATABASE_DOWN,
                },
            }
        },
        "/api/v1/me/scans": {
            "get": {
                "operationId": "listMyScans",
                "summary": "The caller's finished scans, newest first, a page at a time",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "next_cursor of the previous page",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_ref(models.ScanHistoryPage), "one page"),
                    "400": _error("limit out of range, or a cursor this API did not return"),
                    **_AUTH_ERRORS,
                    **_DATABASE_DOWN,
                },
            }
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/scan": {"post": _submit()},
        "/api/v1/scan/categories": {
            "get": {
                "operationId": "listCategories",
                "summary": "The supported categories with their display names and disposal instructions",
                "responses": {"200": _json({"type": "array", "items": _ref(models.Category)}, "the categories")},
            }
        },
        "/api/v1/characters": {
            "get": {
                "operationId": "listCharacters",
                "summary": "The character catalog, kept current in every replica from the catalog exchange",
                "responses": {"200": _json(_ref(models.CharacterList), "the catalog, the default character first")},
            }
        },
        "/api/v1/scan/{job_id}/result": {
            "get": {
                "operationId": "getScanResult",
                "summary": "The result once finished (200), else progress (202 with Retry-After)",
                "security": _BEARER,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(_ref(models.ScanResult), "done, failed or cancelled"),
                    "202": _json(_ref(models.ScanProgress), "still running", _RETRY_AFTER),
                    **_JOB_ERRORS,
                    **_STORE_DOWN,
                },
            }
        },
        "/api/v1/scan/{job_id}/events": {
            "get": {
                "operationId": "streamScanEvents",
                "summary": "Server-sent events: replay, then live stage transitions; ends after done/failed/cancelled",
                "description": "Each event: `id:` the sequence number, `event:` the stage, `data:` JSON "
                "{seq, stage, status, progress, message, data}. Reconnect with Last-Event-ID to resume.",
                "security": _BEARER,
                "parameters": [
                    _JOB_ID,
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _text("text/event-stream", "the event stream"),
                    **_JOB_ERRORS,
                    "429": _error("the caller holds the most concurrent streams (too_many_streams)", _RETRY_AFTER),
                    **_STORE_DOWN,
                },
            }
        },
        "/api/v1/scan/{job_id}": {
            "delete": {
                "operationId": "cancelScan",
                "summary": "Cancel a queued or running scan",
                "security": _BEARER,
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(_ref(models.JobState), "cancelled"),
                    **_JOB_ERRORS,
                    "409": _error("the job has already ended"),
                    **_STORE_DOWN,
                },
            }
        },
        "/api/v1/auth/logout": {
            "post": {
                "operationId": "logout",
                "summary": "Revoke the caller's bearer token",
                "security": _BEARER,
                "responses": {
                    "204": {"description": "revoked"},
                    "400": _error("the request carried no bearer token"),
                    **_AUTH_ERRORS,
                    **_STORE_DOWN,
                },
            }
        },
        **_mine(),
        "/healthz": {"get": {"operationId": "health", "responses": {"200": _json(_ref(models.Health), "alive")}}},
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "responses": {
                    "200": _json(_ref(models.Readiness), "ready: Redis answers"),
                    "503": _json(_ref(models.Readiness), "not ready"),
                },
            }
        },
        **openapi_web.web_paths(_ref, _json, _error, _BEARER),
    }


def schemas() -> dict[str, Any]:
    _, top = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    return dict(sorted(top["$defs"].items()))


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eco² scan gateway",
            "version": "1.0.0",
            "description": "The mobile API: submit a photo, follow the scan over SSE or poll its result.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "userHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-User-ID",
                    "description": "only when the gateway runs behind a trusted edge (ECO2_TRUST_USER_HEADER=true)",
                },
            },
        },
    }


def render() -> str:
    """The document as the repo keeps it (stable key order, UTF-8, trailing newline)."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eco2.gateway.openapi", description=__doc__)
    parser.add_argument(
        "--write", nargs="?", const=REPO_FILE, type=Path, metavar="PATH", help=f"write it (default {REPO_FILE.name})"
    )
    args = parser.parse_args(argv)
    if args.write is None:
        print(render(), end="")
    else:
        args.write.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
