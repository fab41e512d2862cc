"""A loopback TCP proxy that tests cut to make a real dependency (Postgres, a service) go down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A loopback TCP proxy to a service; setting the event cuts every connection and refuses new ones (the service
    is down for whoever calls it through the proxy), clearing it lets connections through again."""
    cut = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while not cut.is_set() and (data := await reader.read(65536)):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if cut.is_set():
            client_writer.transport.abort()
            return
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        both = [asyncio.create_task(pipe(client_reader, server_writer)),
                asyncio.create_task(pipe(server_reader, client_writer))]
        tasks.update(both)
        await cut.wait()
        for writer in (client_writer, server_writer):
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, cut
    finally:
        cut.set()
        server.close()
        for task in tasks:
            task.cancel()
