"""Reading the gateway's Server-Sent Events (the `eco2 scan` command, the tests), on httpx-sse.

A message's `id` is the job event's sequence number: the last one seen is what a reconnect sends as
Last-Event-ID. The gateway's keep-alive comments dispatch nothing (the SSE spec; httpx-sse alone would yield
an empty message for each once an id was seen, so they are dropped here).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator

import httpx
from httpx_sse import EventSource, ServerSentEvent
from httpx_sse._decoders import SSEDecoder

SseMessage = ServerSentEvent


def messages(response: httpx.Response) -> Iterator[SseMessage]:
    """The messages of a streamed response (raises httpx_sse.SSEError unless it is text/event-stream)."""
    return (message for message in EventSource(response).iter_sse() if message.data)


async def amessages(response: httpx.Response) -> AsyncIterator[SseMessage]:
    async for message in EventSource(response).aiter_sse():
        if message.data:
            yield message


async def aparse(lines: AsyncIterable[str]) -> AsyncIterator[SseMessage]:
    """The messages in lines already split (`response.aiter_lines()`); prefer `amessages(response)`."""
    decoder = SSEDecoder()
    async for line in lines:
        message = decoder.decode(line.rstrip("\r\n"))
        if message is not None and message.data:
            yield message
