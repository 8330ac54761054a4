"""A TCP pass-through to the real Redis that a test can stall: what a paused or unreachable Redis looks like.

It forwards bytes both ways; while stalled it holds what clients send (nothing reaches Redis, nothing comes
back), as `CLIENT PAUSE` would, but only for the connections of the test that owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class StallableRedis:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self._db = parts.path or "/0"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._db}"

    async def start(self) -> StallableRedis:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def stall_for(self, seconds: float) -> None:
        self.stall()
        await asyncio.sleep(seconds)
        self.resume()

    async def aclose(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await source.read(65536):
                await self._flowing.wait()
                sink.write(chunk)
                await sink.drain()
        sink.close()
