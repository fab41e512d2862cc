"""tdev_common.completion: work whose caller left runs to its end; unary writes are wrapped, reads are not."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tdev_common import completion
from tdev_common.handler_layers import completion_layer

pytestmark = pytest.mark.unit


async def test_cancelling_the_caller_stops_the_wait_and_the_work_still_finishes() -> None:
    finished = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.05)
        finished.set()
        return "done"

    caller = asyncio.create_task(completion.complete(work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not finished.is_set()
    assert await completion.drain(timeout=2.0) == 0
    assert finished.is_set()


async def test_a_caller_that_waits_gets_the_result_or_the_error() -> None:
    async def fails() -> None:
        raise ValueError("bad input")

    async def answers() -> int:
        return 42

    assert await completion.complete(answers()) == 42
    with pytest.raises(ValueError, match="bad input"):
        await completion.complete(fails())


async def test_drain_cancels_what_outlives_its_timeout() -> None:
    never = asyncio.Event()
    caller = asyncio.create_task(completion.complete(never.wait()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await completion.drain(timeout=0.05) == 1
    assert await completion.drain(timeout=0.05) == 0


async def test_drain_leaves_work_whose_caller_still_waits_alone() -> None:
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "answered"

    caller = asyncio.create_task(completion.complete(slow()))
    await asyncio.sleep(0)
    assert await completion.drain(timeout=0.05) == 0  # another service's live call, not this stop's to end
    release.set()
    assert await caller == "answered"


async def _behaviour(request: object, context: object) -> object:
    return request


@pytest.mark.parametrize(("method", "wrapped"), [
    ("/tdev.registry.v1.RegistryService/RegisterAgent", True),
    ("/tdev.registry.v1.RegistryService/RecordExecutions", True),
    ("/tdev.workflow.v1.WorkflowService/CancelExecution", True),
    ("/tdev.registry.v1.RegistryService/GetAgent", False),
    ("/tdev.registry.v1.RegistryService/ListAgents", False),
    ("/tdev.registry.v1.RegistryService/SearchAgents", False),
    ("/grpc.health.v1.Health/Check", False),
])
def test_unary_methods_that_may_write_are_wrapped_and_reads_are_not(method: str, wrapped: bool) -> None:
    handler = grpc.unary_unary_rpc_method_handler(_behaviour)
    assert (completion_layer(handler, method) is not handler) is wrapped


def test_streaming_methods_are_left_as_they_are() -> None:
    handler = grpc.unary_stream_rpc_method_handler(_behaviour)
    assert completion_layer(handler, "/tdev.workflow.v1.WorkflowService/ExecuteWorkflow") is handler


async def test_a_decorated_method_finishes_its_write_when_the_task_calling_it_is_cancelled() -> None:
    written: list[str] = []

    class Store:
        @completion.completes
        async def append(self, value: str) -> str:
            await asyncio.sleep(0.03)  # the transaction, mid-way
            written.append(value)
            return value

    store = Store()
    assert Store.append.__name__ == "append"
    run = asyncio.create_task(store.append("event 1"))
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await completion.drain(timeout=2.0)
    assert written == ["event 1"]
    assert await store.append("event 2") == "event 2"
