"""A small Server-Sent Events parser for clients of the gateway (the `eco2 scan` command, the tests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SseMessage:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseDecoder:
    """Feed it lines (without their line break); it returns a message at each blank line that ends one."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return message
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


def parse(lines: Iterable[str]) -> Iterator[SseMessage]:
    decoder = SseDecoder()
    for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message


async def aparse(lines: AsyncIterable[str]) -> AsyncIterator[SseMessage]:
    decoder = SseDecoder()
    async for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message
