"""CloudEvents in binary mode (attributes as `ce-` headers, data as the body) without the SDK's marshallers.

The SDK's from_http and to_binary build a v1 event object and copy every attribute through it, on every delivery of
every function and the runner (the cost is in docs/benchmarks.md). These do the same conversions directly and give
the same result (tests/test_binary.py holds them to the SDK's output); the spec checks and the error answers stay in
eco2.adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from cloudevents.http import CloudEvent


class HeaderItems(Protocol):
    def items(self) -> Iterable[tuple[str, Any]]: ...


def binary_headers(headers: HeaderItems) -> tuple[str | None, dict[str, str]]:
    """The content type and the `ce-` attributes of a request, in one pass over its headers (names case-blind)."""
    content_type: str | None = None
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-"):
            attributes[lowered[3:]] = str(value)
        elif lowered == "content-type":
            content_type = str(value)
    return content_type, attributes


def binary_event(attributes: dict[str, str], content_type: str | None, body: bytes) -> CloudEvent:
    """The event of a binary-mode request, as from_http builds it: the data is the body's JSON when it parses,
    else the raw bytes (the SDK's rule); the content type becomes `datacontenttype`."""
    if content_type:
        attributes["datacontenttype"] = content_type
    data: Any = None
    if body:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = body
    return CloudEvent(attributes, data)


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode HTTP headers and body of an event: what to_binary makes (JSON data as json.dumps writes it)."""
    headers: dict[str, str] = {}
    for name, value in event.get_attributes().items():
        if name == "datacontenttype":
            headers["content-type"] = str(value)
        elif value is not None:
            headers[f"ce-{name}"] = str(value)
    data = event.get_data()
    if data is None:
        return headers, b""
    if isinstance(data, bytes | bytearray | memoryview):
        return headers, bytes(data)
    return headers, json.dumps(data).encode()
