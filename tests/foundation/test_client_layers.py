"""What open_channel adds to every call: a default deadline (single-response calls only) and the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tdev_common.grpc_client import ClientSecurity, open_channel

pytestmark = pytest.mark.mesh

TOKEN = "a-service-token-of-16+"


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[tuple[float | None, str | None]]]]:
    """A server recording, per call, its time remaining and the authorization it got."""
    seen: list[tuple[float | None, str | None]] = []

    def record(context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        seen.append((context.time_remaining(), metadata.get("authorization")))  # type: ignore[arg-type]

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        record(context)
        return b"ok"

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        record(context)
        yield b"a"
        yield b"b"

    running = grpc.aio.server()
    running.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", {
        "U": grpc.unary_unary_rpc_method_handler(unary), "S": grpc.unary_stream_rpc_method_handler(stream)})])
    port = running.add_insecure_port("127.0.0.1:0")
    await running.start()
    yield f"127.0.0.1:{port}", seen
    await running.stop(0)


async def test_unary_calls_get_the_default_deadline_and_streams_do_not(
    server: tuple[str, list[tuple[float | None, str | None]]],
) -> None:
    address, seen = server
    async with open_channel(address, deadline_seconds=7.0, retries=False) as channel:
        assert await channel.unary_unary("/t.S/U")(b"") == b"ok"
        assert await channel.unary_unary("/t.S/U")(b"", timeout=2.0) == b"ok"
        assert [item async for item in channel.unary_stream("/t.S/S")(b"")] == [b"a", b"b"]
    (default, _), (given, _), (streamed, _) = seen
    assert default is not None and 6.0 < default <= 7.1  # the deadline travels rounded up
    assert given is not None and 1.0 < given <= 2.1
    assert streamed is None


async def test_the_service_token_goes_with_unary_and_streaming_calls(
    server: tuple[str, list[tuple[float | None, str | None]]],
) -> None:
    address, seen = server
    async with open_channel(address, retries=False, security=ClientSecurity(service_token=TOKEN)) as channel:
        await channel.unary_unary("/t.S/U")(b"", metadata=(("x-request-id", "r1"),))
        [item async for item in channel.unary_stream("/t.S/S")(b"")]
    assert [authorization for _, authorization in seen] == [f"Bearer {TOKEN}"] * 2


async def test_without_a_token_no_authorization_is_sent(
    server: tuple[str, list[tuple[float | None, str | None]]],
) -> None:
    address, seen = server
    async with open_channel(address, retries=False) as channel:
        await channel.unary_unary("/t.S/U")(b"")
    assert seen[0][1] is None
