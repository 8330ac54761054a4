"""The cache-sync events: what other systems publish on the fanout exchanges, and how they travel over AMQP."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eco2.errors import PoisonEvent

SPECVERSION = "1.0"
# CloudEvents binary mode over AMQP 0-9-1 (the RabbitMQ protocol binding): attributes as `cloudEvents:<name>`
# headers (`cloudEvents_<name>` read too), data as the body, datacontenttype as the content_type property.
HEADER_PREFIXES = ("cloudEvents:", "cloudEvents_")
MAX_CHARACTERS = 500


class SyncEventType(StrEnum):
    TOKEN_REVOKED = "eco2.auth.token.revoked"  # noqa: S105 - an event type, not a secret
    CATALOG_UPDATED = "eco2.character.catalog.updated"


class Exchange(StrEnum):
    """The fanout exchanges other systems publish to (a test passes prefixed names instead)."""

    BLACKLIST = "eco2.auth.blacklist"
    CATALOG = "eco2.character.catalog"


EXCHANGE_OF: dict[SyncEventType, Exchange] = {
    SyncEventType.TOKEN_REVOKED: Exchange.BLACKLIST,
    SyncEventType.CATALOG_UPDATED: Exchange.CATALOG,
}


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class TokenRevoked(_Data):
    """One token (`jti`), or every token of the user issued at or before `issued_before` (a compromised account)."""

    jti: str | None = Field(default=None, min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    # Unix seconds: when the token would have expired anyway; for a user, when the last token issued before
    # the revocation would (issued_before + the longest token life).
    expires_at: float = Field(gt=0)
    issued_before: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_token_or_the_user(self) -> TokenRevoked:
        if (self.jti is None) == (self.issued_before is None):
            raise ValueError("give either jti (one token) or issued_before (every token of the user)")
        return self


class CatalogUpdated(_Data):
    version: int = Field(ge=1)
    characters: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_CHARACTERS)


def amqp_message(event_type: SyncEventType, data: _Data, *, source: str) -> tuple[dict[str, str], bytes]:
    """The headers and body of an event published in binary mode (what `publish` and the tests send)."""
    headers = {
        "cloudEvents:specversion": SPECVERSION,
        "cloudEvents:type": str(event_type),
        "cloudEvents:source": source,
        "cloudEvents:id": str(uuid.uuid4()),
        "cloudEvents:time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Unset optional fields left out: a one-token revocation reads exactly as before user-wide ones existed.
    return headers, data.model_dump_json(exclude_none=True).encode()


def attributes_of(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The CloudEvent attributes carried in an AMQP message's headers (either prefix), by attribute name."""
    found: dict[str, str] = {}
    for key, value in (headers or {}).items():
        for prefix in HEADER_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                found[key[len(prefix) :]] = value.decode() if isinstance(value, bytes) else str(value)
    return found


def json_object(body: bytes) -> dict[str, Any]:
    """A message body as a JSON object; anything else is a poison event."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PoisonEvent("invalid_data", "event data must be JSON") from None
    if not isinstance(data, dict):
        raise PoisonEvent("invalid_data", "event data must be a JSON object")
    return data
