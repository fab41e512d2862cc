"""The error layer on a streaming handler: a caller that leaves is not an error, a handler's bug is one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs
from tdev.sandbox.v1 import sandbox_service_pb2 as pb

from tdev_common.errors import error_layer

pytestmark = pytest.mark.unit


class _Context:
    """The parts of a grpc.aio.ServicerContext the layer uses."""

    def __init__(self) -> None:
        self.aborted: list[Any] = []

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str, trailing: Any = None) -> None:
        self.aborted.append(code)
        raise grpc.aio.AbortError()


def _layered(behaviour: Any) -> Any:
    handler = grpc.unary_stream_rpc_method_handler(behaviour)
    return error_layer(handler, "/tdev.sandbox.v1.SandboxService/RunJob").unary_stream


async def test_a_caller_leaving_while_the_handler_waits_to_yield_is_not_an_error() -> None:
    closed = []

    async def answers(request: object, context: object) -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    context = _Context()
    stream = _layered(answers)(pb.GetIsolationRequest(), context)
    with capture_logs() as logs:
        assert await anext(stream) == 1
        await stream.aclose()  # what grpc does to the handler's generator when the call is cancelled

    assert closed == [True] and context.aborted == []
    assert [entry for entry in logs if entry["log_level"] == "error"] == []


async def test_a_handler_that_raises_mid_stream_is_an_internal_error() -> None:
    async def answers(request: object, context: object) -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("a bug")

    context = _Context()
    stream = _layered(answers)(pb.GetIsolationRequest(), context)
    with capture_logs() as logs:
        assert await anext(stream) == 1
        with pytest.raises(grpc.aio.AbortError):
            await anext(stream)

    assert context.aborted == [grpc.StatusCode.INTERNAL]
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["rpc_internal_error"]
