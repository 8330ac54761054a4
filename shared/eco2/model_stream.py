"""Reading a streamed chat completion from the openai SDK's raw HTTP response (text/event-stream).

The SDK's own `AsyncStream` splits the body into lines and events one line at a time in Python, builds an event
object per line group and, after `[DONE]`, drains the body under an AnyIO cancel scope (most of a streamed call's
CPU: docs/benchmarks.md). This reads the same wire format a chunk at a time (the SSE spec's line ends — CRLF, LF or
CR —, `data` fields joined by newlines, comments and other fields ignored), and fails as the SDK's stream does: a
broken transfer or an error document is a transient model failure. Imported with the SDK (eco2.model.ModelClient):
httpx2 is the SDK's HTTP client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx2

from eco2.errors import ModelUnavailable

DONE = b"[DONE]"


class EventData:
    """Splits a text/event-stream body, fed chunk by chunk, into the data of each event up to `[DONE]`."""

    __slots__ = ("_data", "_rest", "done")

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []
        self.done = False  # `[DONE]` came: whatever follows is read (the connection is reused) and dropped

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event this chunk completes (a blank line ends an event), in order."""
        lines = (self._rest + chunk).splitlines(keepends=True)  # bytes split on CRLF, LF and CR only
        # An unfinished last line waits for the next chunk; so does a last CR, the first half of a CRLF maybe.
        self._rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        return self._events(lines)

    def finish(self) -> list[bytes]:
        """At the end of the body: a last line ended by a CR is complete; an event left unended is dropped (as
        the spec says)."""
        rest, self._rest = self._rest, b""
        return self._events([rest]) if rest.endswith(b"\r") else []

    def _events(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        for ended in lines:
            line = ended.rstrip(b"\r\n")
            if not line:
                if self._data and not self.done:
                    data = b"\n".join(self._data)
                    self.done = data.startswith(DONE)
                    if not self.done:
                        events.append(data)
                self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line == b"data":
                self._data.append(b"")
        return events


def chunk_document(data: bytes) -> Any:
    """One event's JSON; an error document or unreadable data fails the call (the SDK raises APIError)."""
    try:
        document = json.loads(data)
    except ValueError:
        raise ModelUnavailable(message="the model returned malformed output") from None
    if isinstance(document, dict) and document.get("error"):
        raise ModelUnavailable(message="the model failed")
    return document


async def documents(response: httpx2.Response) -> AsyncGenerator[Any, None]:
    """The JSON document of each event up to `[DONE]`. The body is read to its end (its connection is then
    reused) and closed, also when the caller stops early (iterate under `contextlib.aclosing`). A transfer that
    breaks or stalls is ModelUnavailable, as the SDK's APIConnectionError and APITimeoutError are (eco2.model)."""
    reader = EventData()
    try:
        async for chunk in response.aiter_bytes():
            for data in reader.feed(chunk):
                yield chunk_document(data)
        for data in reader.finish():
            yield chunk_document(data)
    except (httpx2.RequestError, OSError):  # httpx2's timeouts are RequestErrors too
        raise ModelUnavailable(message="the model did not answer in time") from None
    finally:
        await response.aclose()
