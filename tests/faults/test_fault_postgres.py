"""Postgres restarted under in-flight executions: callers see only UNAVAILABLE, and every execution completes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tests.support.servers import PostgresServer
from tests.workflow.conftest import (
    Mesh,
    State,
    assert_gapless,
    create,
    definition,
    drop_database,
    node,
    start_mesh,
    struct,
)

pytestmark = [pytest.mark.mesh, pytest.mark.fault, pytest.mark.asyncio(loop_scope="module")]
EXECUTIONS = 8
TERMINAL = {State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    started = await start_mesh(tmp_path_factory.mktemp("pg-fault"))
    try:
        yield started
    finally:
        await started.close()
        for url in [started.database_url, *started.extra_databases]:
            await drop_database(url)


class Prober:
    """Calls read RPCs in a loop and counts the status codes they answer with."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.call = call
        self.codes: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.call()  # type: ignore[misc]
                self.codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                self.codes[error.code().name] += 1
            await asyncio.sleep(0.05)

    def __enter__(self) -> Prober:
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _watch_to_end(stub: object, execution_id: str, codes: Counter[str]) -> list[object]:
    """Watches an execution to its end, resuming after every broken stream, counting the codes seen."""
    events: list[object] = []
    after = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        call = stub.WatchExecution(  # type: ignore[attr-defined]
            pb2.WatchExecutionRequest(execution_id=execution_id, after_sequence=after), timeout=30)
        try:
            async for answer in call:
                events.append(answer.event)
                after = answer.event.sequence
            return events
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
            await asyncio.sleep(0.2)
    raise AssertionError(f"execution {execution_id} never ended")


async def test_postgres_restart_under_in_flight_executions(
    mesh: Mesh, own_postgres: PostgresServer, tmp_path: Path, figure: Callable[[str, float, str], None]
) -> None:
    database = own_postgres.create_database("workflow")
    workflows = await mesh.start_workflows(database_url=database, lease_seconds=3.0, claim_interval_seconds=0.2)
    try:
        await _restart_under_executions(workflows.stub, own_postgres, figure)
    finally:
        # Stopped while its own Postgres still runs (the cluster goes with this test, the module's mesh later).
        mesh.started.remove(workflows)
        await workflows.close()


async def _restart_under_executions(stub: pb2_grpc.WorkflowServiceStub, own_postgres: PostgresServer,
                                    figure: Callable[[str, float, str], None]) -> None:
    chain = [node("n0", "wf_sleep", {"seconds": 0.4, "value": {"$ref": "inputs.base"}})]
    for index in range(1, 6):
        chain.append(node(f"n{index}", "wf_sleep",
                          {"seconds": 0.4, "value": {"$ref": f"nodes.n{index - 1}.output.value"}}, [f"n{index - 1}"]))
    stored = await create(stub, definition("pg-restart", chain, outputs={"value": "nodes.n5.output.value"}))
    ids = []
    for index in range(EXECUTIONS):
        started = await stub.StartExecution(pb2.StartExecutionRequest(
            workflow_id=stored.workflow_id, inputs=struct({"base": index}), request_id=f"pg-restart-{index}"))
        ids.append(started.execution.execution_id)

    watch_codes: Counter[str] = Counter()
    watchers = [asyncio.create_task(_watch_to_end(stub, execution_id, watch_codes)) for execution_id in ids]
    with Prober(lambda: stub.GetExecution(pb2.GetExecutionRequest(execution_id=ids[0]), timeout=10)) as get, \
            Prober(lambda: stub.ListExecutions(pb2.ListExecutionsRequest(page_size=5), timeout=10)) as listing:
        await asyncio.sleep(0.8)  # executions are mid-run
        stopped_at = time.monotonic()
        await asyncio.to_thread(own_postgres.stop, "fast")   # sessions terminated: 57P01
        await asyncio.sleep(5.0)                              # refused connections
        await asyncio.to_thread(own_postgres.start)
        back_at = time.monotonic()
        events_by_execution = await asyncio.wait_for(asyncio.gather(*watchers), timeout=120)
        done_at = time.monotonic()
        await asyncio.sleep(0.3)

    codes = get.codes + listing.codes + watch_codes
    figure("postgres restart: outage (stopped -> accepting again)", back_at - stopped_at, "s")
    figure("postgres restart: all executions ended after Postgres was back", done_at - back_at, "s")
    figure("postgres restart: UNAVAILABLE answers during the outage", codes["UNAVAILABLE"], "calls")
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["UNAVAILABLE"] > 0, "the outage was not observed by any call"

    outputs = []
    for execution_id, events in zip(ids, events_by_execution, strict=True):
        assert_gapless(events)  # type: ignore[arg-type]
        answer = await stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id))
        assert answer.execution.state == State.STATE_SUCCEEDED, (execution_id, answer.execution.error)
        outputs.append(answer.execution.outputs["value"])
    assert sorted(outputs) == [float(index) for index in range(EXECUTIONS)]
