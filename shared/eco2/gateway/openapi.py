"""The gateway's OpenAPI 3 document, served at /openapi.json and kept in the repo as openapi.json.

Regenerate the file after a change: `python -m eco2.gateway.openapi > openapi.json`.
"""

from __future__ import annotations

import json
from typing import Any

_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {"userHeader": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
_AUTH_ERRORS = {"401": _error("missing, invalid, expired or revoked credentials")}
_JOB_ERRORS = {**_AUTH_ERRORS, "404": _error("no such job (or not the caller's)")}
_STORE_DOWN = {"503": _error("the job store is unreachable")}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "ScanRequest": {
        "type": "object",
        "required": ["image_url"],
        "example": {
            "image_url": "https://93.184.216.34/photos/bottle.png",
            "user_input": "다 마신 생수병이에요",
            "model": "gpt-4.1-mini",
        },
        "properties": {
            "image_url": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "description": "http(s) URL of the photo; must resolve to a public address",
            },
            "user_input": {"type": ["string", "null"], "maxLength": 1000},
            "model": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
        },
    },
    "ScanAccepted": {
        "type": "object",
        "required": ["job_id", "stream_url", "result_url", "status"],
        "properties": {
            "job_id": {"type": "string"},
            "stream_url": {"type": "string"},
            "result_url": {"type": "string"},
            "status": {"type": "string", "enum": ["queued"]},
        },
    },
    "ScanProgress": {
        "type": "object",
        "required": ["status", "message", "current_stage", "progress"],
        "properties": {
            "status": {"type": "string"},
            "message": {"type": "string"},
            "current_stage": {"type": "string"},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        },
    },
    "ScanResult": {
        "type": "object",
        "required": ["task_id", "status", "message", "pipeline_result", "reward", "error"],
        "properties": {
            "task_id": {"type": "string"},
            "status": {"type": "string", "enum": ["done", "failed", "cancelled"]},
            "message": {"type": "string"},
            "pipeline_result": {
                "type": ["object", "null"],
                "description": "classification, disposal_rules, final_answer",
            },
            "reward": {"type": ["object", "null"], "description": "the granted character, or null"},
            "reward_reason": {"type": ["string", "null"], "description": "why a character was or was not granted"},
            "error": {"oneOf": [{"type": "null"}, _ref("Error"), {"type": "object"}]},
        },
    },
    "JobState": {
        "type": "object",
        "required": ["job_id", "status", "message", "current_stage", "progress"],
        "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string"},
            "message": {"type": "string"},
            "current_stage": {"type": "string"},
            "progress": {"type": "integer"},
        },
    },
    "Categories": {
        "type": "object",
        "required": ["categories"],
        "properties": {"categories": {"type": "array", "items": {"type": "object"}}},
    },
}

_PATHS: dict[str, Any] = {
    "/api/v1/scan": {
        "post": {
            "operationId": "submitScan",
            "summary": "Submit a photo; answers at once with the job's stream and result URLs",
            "security": _BEARER,
            "parameters": [
                {
                    "name": "X-Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "a repeat with the same key (kept 1 h, per user) returns the same job",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ScanRequest")}}},
            "responses": {
                "202": _json(_ref("ScanAccepted"), "queued"),
                "400": _error(
                    "bad JSON, image_url refused (unsafe, redirects into this network, or not an image), "
                    "unknown model, bad idempotency key"
                ),
                **_AUTH_ERRORS,
                "413": _error("body larger than 16 KiB"),
                "422": _error("wrong field types, or an idempotency key reused for another request"),
                "429": _error("per-user rate limit", _RETRY_AFTER),
                "503": _error("the broker or the job store is unavailable; the job (if any) is marked failed"),
            },
        }
    },
    "/api/v1/scan/categories": {
        "get": {
            "operationId": "listCategories",
            "summary": "The supported categories with their display names and instructions",
            "responses": {"200": _json(_ref("Categories"), "the categories")},
        }
    },
    "/api/v1/scan/{job_id}/result": {
        "get": {
            "operationId": "getScanResult",
            "summary": "The result once finished (200), else progress (202 with Retry-After)",
            "security": _BEARER,
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json(_ref("ScanResult"), "done, failed or cancelled"),
                "202": _json(_ref("ScanProgress"), "still running", _RETRY_AFTER),
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
                "200": {
                    "description": "the event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_JOB_ERRORS,
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
                "200": _json(_ref("JobState"), "cancelled"),
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
    "/healthz": {
        "get": {
            "operationId": "health",
            "responses": {"200": _json({"type": "object"}, "alive (redis: whether Redis answers)")},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "responses": {
                "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
            },
        }
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eco² scan gateway",
            "version": "1.0.0",
            "description": "The mobile API: submit a photo, follow the scan over SSE or poll its result.",
        },
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
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


if __name__ == "__main__":
    print(render(), end="")
