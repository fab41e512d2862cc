"""Crashes and replicas: kill -9 of ``python -m workflow_svc`` mid-run, leases shared by two replicas."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import Counter

import grpc
import pytest
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tdev_common.clock import from_epoch
from tests.support.ports import free_port
from tests.workflow.conftest import (
    Event,
    Mesh,
    State,
    assert_gapless,
    create,
    create_database,
    definition,
    node,
    of_type,
    plain,
    watch,
)
from workflow_svc.domain import Batch, Claim, EventType
from workflow_svc.domain import Event as DomainEvent
from workflow_svc.repository import LeaseLost, SqlRepository

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
MIDDLE = 12


def crash_workflow(name: str) -> wf_pb2.Workflow:
    """root -> 12 sleepy echo nodes (2 at a time) -> adders -> a sum: slow enough to be killed mid-run."""
    middle = [node(f"m{i:02d}", "wf_sleep", {"seconds": 0.5, "value": {"$ref": "inputs.base"}}, ["root"])
              for i in range(MIDDLE)]
    adders = [node(f"a{i:02d}", "wf_add", {"values": [{"$ref": f"nodes.m{i:02d}.output.value"}, i]}, [f"m{i:02d}"])
              for i in range(MIDDLE)]
    sink = node("sum", "wf_add", {"values": [{"$ref": f"nodes.a{i:02d}.output.value"} for i in range(MIDDLE)]},
                [f"a{i:02d}" for i in range(MIDDLE)])
    return definition(name, [node("root", "wf_noop"), *middle, *adders, sink], max_concurrency=2,
                      outputs={"total": "nodes.sum.output.value"})


class Service:
    """A ``python -m workflow_svc`` process that can be killed and restarted on the same port."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.port = free_port()
        self.process: object = None
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb2_grpc.WorkflowServiceStub(self.channel)

    async def start(self, worker_id: str, lease_seconds: float = 1.5) -> None:
        self.process = self.mesh.spawn_workflows(
            self.port, {"TDEV_WORKFLOW_WORKER_ID": worker_id, "TDEV_WORKFLOW_LEASE_SECONDS": str(lease_seconds),
                        "TDEV_WORKFLOW_CLAIM_INTERVAL_SECONDS": "0.2"})
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.stub.GetWorkflow(pb2.GetWorkflowRequest(workflow_id="wf_probe"), timeout=1)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return
            if time.monotonic() > deadline:
                raise AssertionError("workflow service did not start")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()  # type: ignore[attr-defined]
        self.process.wait(10)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.channel.close()
        if self.process is not None and self.process.poll() is None:  # type: ignore[attr-defined]
            self.process.terminate()  # type: ignore[attr-defined]
            try:
                await asyncio.to_thread(self.process.wait, 10)  # type: ignore[attr-defined]
            except subprocess.TimeoutExpired:
                # Cleanup, not what these tests check (the SIGTERM drain has its own test): do not leave it.
                self.process.kill()  # type: ignore[attr-defined]
                await asyncio.to_thread(self.process.wait, 10)  # type: ignore[attr-defined]


async def _follow(stub: pb2_grpc.WorkflowServiceStub, execution_id: str, after: int,
                  seen: list[wf_pb2.ExecutionEvent], until: object, since: float = 0.0) -> bool:
    """Appends events to ``seen`` until ``until(seen)`` holds on an event stored after ``since``.

    Returns False when the execution ended first. A broken stream is resumed from the last event.
    """
    for _ in range(50):
        call = stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id, after_sequence=after))
        try:
            async for answer in call:
                seen.append(answer.event)
                after = answer.event.sequence
                # Kill moments are judged on events of the current process, not on replayed older ones.
                if answer.event.time.ToMicroseconds() / 1e6 > since and until(seen):  # type: ignore[operator]
                    return True
            return False
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
        finally:
            call.cancel()
    raise AssertionError("the watch stream kept failing")


def _succeeded(events: list[wf_pb2.ExecutionEvent], prefix: str) -> int:
    return sum(1 for e in events if e.type == Event.TYPE_NODE_SUCCEEDED and e.node_id.startswith(prefix))


async def test_kill_9_at_several_moments_resumes_without_rerunning_finished_nodes(mesh: Mesh) -> None:
    service = Service(mesh)
    try:
        await service.start("worker-a")
        stored = await create(service.stub, crash_workflow("crash"))
        base = {"base": 100}
        from tests.workflow.conftest import struct

        started = await service.stub.StartExecution(
            pb2.StartExecutionRequest(workflow_id=stored.workflow_id, inputs=struct(base)))
        execution_id = started.execution.execution_id
        seen: list[wf_pb2.ExecutionEvent] = []
        # Moments: right after the start, after 3 sleepers finished, after 9 (and some adders) finished.
        moments = [
            lambda s: any(e.type == Event.TYPE_NODE_STARTED and e.node_id.startswith("m") for e in s),
            lambda s: _succeeded(s, "m") >= 4,
            lambda s: _succeeded(s, "m") >= 9,
        ]
        done_before_kill: list[set[str]] = []
        kill_sequence: list[int] = []
        kill_times: list[float] = []
        restarts = ["worker-a", "worker-b", "worker-b"]
        since = 0.0
        for moment, next_worker in zip(moments, restarts, strict=True):
            reached = await _follow(service.stub, execution_id, seen[-1].sequence if seen else 0, seen, moment, since)
            assert reached, f"the execution ended before kill {len(kill_sequence) + 1}: {seen[-1]}"
            service.kill()
            done_before_kill.append({e.node_id for e in seen if e.type == Event.TYPE_NODE_SUCCEEDED})
            kill_sequence.append(seen[-1].sequence)
            since = time.time()
            kill_times.append(since)
            await service.start(next_worker)
        final: list[wf_pb2.ExecutionEvent] = []
        await _follow(service.stub, execution_id, 0, final, lambda s: False)
        assert_gapless(final)
        assert final[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
        expected_total = sum(100 + i for i in range(MIDDLE))
        assert plain(final[-1].output) == {"total": expected_total}
        # Each node succeeded exactly once over the three crashes.
        assert Counter(e.node_id for e in of_type(final, Event.TYPE_NODE_SUCCEEDED)) == Counter(
            ["root", *(f"m{i:02d}" for i in range(MIDDLE)), *(f"a{i:02d}" for i in range(MIDDLE)), "sum"])
        # A node seen finished before a kill never started again after it.
        for finished, sequence in zip(done_before_kill, kill_sequence, strict=True):
            restarted = {e.node_id for e in final if e.type == Event.TYPE_NODE_STARTED and e.sequence > sequence}
            assert not finished & restarted
        # Every kill that found the execution unfinished is followed by exactly one resume. On a loaded machine
        # the last nodes can finish between the last moment being seen and the kill landing: then the next
        # process has nothing to resume (the success was committed before the kill).
        ended = final[-1].time.ToMicroseconds() / 1e6
        unfinished_kills = sum(1 for killed in kill_times if killed < ended)
        assert unfinished_kills >= 2
        assert len(of_type(final, Event.TYPE_EXECUTION_RESUMED)) == unfinished_kills
        assert {e.worker_id for e in final} == {"worker-a", "worker-b"}

        # The same workflow without crashes gives the same outputs.
        clean = await service.stub.StartExecution(
            pb2.StartExecutionRequest(workflow_id=stored.workflow_id, inputs=struct(base)))
        events = await watch(service.stub, clean.execution.execution_id)
        assert plain(events[-1].output) == plain(final[-1].output)
        execution = (await service.stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id))).execution
        assert execution.state == State.STATE_SUCCEEDED
    finally:
        await service.close()


async def test_two_replicas_share_executions_and_watchers_see_every_event_on_either(mesh: Mesh) -> None:
    first = await mesh.start_workflows(max_active_executions=2, worker_id=f"rep-a-{uuid.uuid4().hex[:4]}")
    second = await mesh.start_workflows(max_active_executions=2, worker_id=f"rep-b-{uuid.uuid4().hex[:4]}")
    stored = await create(first.stub, definition("shared", [
        node("root", "wf_noop"),
        *(node(f"s{i}", "wf_sleep", {"seconds": 0.2, "value": i}, ["root"]) for i in range(4)),
        node("sum", "wf_add", {"values": [{"$ref": f"nodes.s{i}.output.value"} for i in range(4)]},
             [f"s{i}" for i in range(4)]),
    ]))
    ids = []
    for _ in range(8):
        answer = await first.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
        ids.append(answer.execution.execution_id)
    # Watch half of them through the replica that did not accept them.
    results = await asyncio.gather(*(watch(second.stub if i % 2 else first.stub, ex) for i, ex in enumerate(ids)))
    workers: set[str] = set()
    for events in results:
        assert_gapless(events)
        assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
        assert plain(events[-1].output) == {"sum": {"value": 6}}
        starts = Counter(e.node_id for e in of_type(events, Event.TYPE_NODE_STARTED))
        assert starts == Counter(["root", "s0", "s1", "s2", "s3", "sum"])
        owners = {e.worker_id for e in events}
        assert len(owners) == 1
        workers |= owners
    assert len(workers) == 2


async def test_a_stale_workers_late_write_is_rejected(mesh: Mesh) -> None:
    from tdev_common.db import create_engine

    # A database of its own: the replicas earlier tests of this module leave running on mesh.database_url
    # would resume the execution once it is released below, and a claim skips a row such a replica holds
    # locked mid-write (SKIP LOCKED), so "stale" could find nothing to claim. Here nothing else runs.
    database_url = await create_database()
    mesh.extra_databases.append(database_url)
    engine = create_engine(database_url, "workflow")
    repo = SqlRepository(engine)
    try:
        workflows = await mesh.start_workflows(database_url)
        stored = await create(workflows.stub, definition("lease", [node("only", "wf_sleep", {"seconds": 5})]))
        started = await workflows.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
        execution_id = started.execution.execution_id
        await workflows.close()
        mesh.started.remove(workflows)
        now = time.time() + 3600  # every lease has expired by then
        (stale,) = await repo.claim("stale", now, 5.0, 1, execution_id=execution_id)
        (fresh,) = await repo.claim("fresh", now + 10, 5.0, 1, execution_id=execution_id)
        assert fresh.epoch == stale.epoch + 1

        def batch(claim: Claim, sequence: int) -> Batch:
            event = DomainEvent(execution_id, sequence, EventType.EXECUTION_RESUMED, from_epoch(now),
                                worker_id=claim.owner)
            return Batch(events=[event])

        last = (await repo.get_execution(execution_id, with_nodes=False)).last_sequence  # type: ignore[union-attr]
        with pytest.raises(LeaseLost):
            await repo.write(stale, batch(stale, last + 1), now, 5.0)
        await repo.write(fresh, batch(fresh, last + 1), now, 5.0)
        stored_events = await repo.events_after(execution_id, last, 10)
        assert [(e.sequence, e.worker_id) for e in stored_events] == [(last + 1, "fresh")]
        with pytest.raises(LeaseLost):
            await repo.write(Claim(execution_id, "fresh", stale.epoch), batch(fresh, last + 2), now, 5.0)
    finally:
        await repo.close()
        await engine.dispose()


async def _lease_epoch(database_url: str, execution_id: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await connection.fetchval(
            "SELECT lease_epoch FROM workflow.executions WHERE execution_id = $1", execution_id))
    finally:
        await connection.close()


async def test_a_database_outage_longer_than_the_lease_does_not_fence_out_the_replica_running_it(
        mesh: Mesh) -> None:
    from tests.conftest import POSTGRES_PORT
    from tests.support.netproxy import tcp_proxy

    # A database of its own: the module's other replicas would rightly take over the expired lease.
    database_url = await create_database()
    mesh.extra_databases.append(database_url)
    async with tcp_proxy(POSTGRES_PORT) as (port, cut):
        through_proxy = database_url.replace(f":{POSTGRES_PORT}/", f":{port}/")
        # Claims are looked for far more often than leases are renewed, so after the outage the claim loop
        # reaches the database first: the case where a replica used to claim (and fence out) its own run.
        workflows = await mesh.start_workflows(
            through_proxy, worker_id=f"outage-{uuid.uuid4().hex[:4]}", lease_seconds=1.5,
            claim_interval_seconds=0.05)
        stored = await create(workflows.stub, definition("outage", [
            node("slow", "wf_sleep", {"seconds": 4.0, "value": 7}),
            node("after", "wf_echo", {"value": {"$ref": "nodes.slow.output.value"}}, ["slow"]),
        ]))
        started = await workflows.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
        execution_id = started.execution.execution_id
        await asyncio.sleep(0.5)  # the node runs in the sandbox now
        cut.set()
        await asyncio.sleep(2.5)  # longer than the lease: it has expired when the database comes back
        cut.clear()
        began = time.monotonic()
        events = await asyncio.wait_for(watch(workflows.stub, execution_id), 30)
        finished_after = time.monotonic() - began
        await workflows.close()
        mesh.started.remove(workflows)
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output) == {"after": {"value": 7}}
    # The run went on under its first lease: never resumed, no node started twice, no epoch taken again.
    assert of_type(events, Event.TYPE_EXECUTION_RESUMED) == []
    assert Counter(e.node_id for e in of_type(events, Event.TYPE_NODE_STARTED)) == Counter(["slow", "after"])
    assert await _lease_epoch(database_url, execution_id) == 1
    # The node had about 1 s left; a fenced-out run would have waited another lease period and re-run it.
    assert finished_after < 3.0
