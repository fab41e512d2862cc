"""Executions over real gRPC: real registry, Postgres, Redis and sandbox."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import pytest
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from typer.testing import CliRunner

from tdev_cli.main import app
from tests.workflow.conftest import (
    Event,
    Mesh,
    NodeState,
    State,
    Workflows,
    assert_gapless,
    create,
    definition,
    eventually,
    execute,
    has_job_processes,
    job_processes_under,
    node,
    of_type,
    plain,
    rpc_error,
    struct,
    watch,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


def diamond(name: str = "diamond") -> object:
    return definition(name, [
        node("a", "wf_echo", {"value": {"$ref": "inputs.x"}}),
        node("b", "wf_add", {"values": [{"$ref": "nodes.a.output.value"}, 1]}, ["a"]),
        node("c", "wf_add", {"values": [{"$ref": "nodes.a.output.value"}, 2]}, ["a"]),
        node("d", "wf_add", {"values": [{"$ref": "nodes.b.output.value"}, {"$ref": "nodes.c.output.value"}]},
             ["b", "c"]),
    ])


async def test_diamond_runs_every_node_once_and_returns_the_sink_output(workflows: Workflows) -> None:
    stored = await create(workflows.stub, diamond())
    events = await execute(workflows.stub, stored.workflow_id, {"x": 10})
    assert_gapless(events)
    assert events[0].type == Event.TYPE_EXECUTION_STARTED
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output) == {"d": {"value": 23}}
    succeeded = of_type(events, Event.TYPE_NODE_SUCCEEDED)
    assert sorted(e.node_id for e in succeeded) == ["a", "b", "c", "d"]
    assert [plain(e.output) for e in succeeded if e.node_id == "a"] == [{"value": 10}]
    assert all(e.attempt == 1 and e.duration_ms > 0 for e in succeeded)
    started = {e.node_id: e.sequence for e in of_type(events, Event.TYPE_NODE_STARTED)}
    done = {e.node_id: e.sequence for e in succeeded}
    assert done["a"] < started["b"] and done["a"] < started["c"]
    assert max(done["b"], done["c"]) < started["d"]

    request = pb2.GetExecutionRequest(execution_id=events[0].execution_id)
    execution = (await workflows.stub.GetExecution(request)).execution
    assert execution.state == State.STATE_SUCCEEDED
    assert plain(execution.outputs) == {"d": {"value": 23}}
    assert plain(execution.inputs) == {"x": 10}
    assert [(n.node_id, n.state, n.attempt) for n in execution.nodes] == [
        (n, NodeState.STATE_SUCCEEDED, 1) for n in "abcd"]
    assert {n.node_id: plain(n.output) for n in execution.nodes} == {
        "a": {"value": 10}, "b": {"value": 11}, "c": {"value": 12}, "d": {"value": 23}}
    assert all(n.agent_version == "1.0.0" for n in execution.nodes)
    assert execution.last_sequence == events[-1].sequence


async def test_fan_out_of_50_runs_in_parallel_and_fans_in(workflows: Workflows) -> None:
    middle = [node(f"m{i:02d}", "wf_echo", {"value": i}, ["root"]) for i in range(50)]
    sink = node("sum", "wf_add", {"values": [{"$ref": f"nodes.m{i:02d}.output.value"} for i in range(50)]},
                [f"m{i:02d}" for i in range(50)])
    stored = await create(workflows.stub, definition(
        "fan-out-50", [node("root", "wf_noop"), *middle, sink], max_concurrency=16,
        outputs={"total": "nodes.sum.output.value"}))
    assert [len(g.node_ids) for g in stored.plan.generations] == [1, 50, 1]
    events = await execute(workflows.stub, stored.workflow_id)
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output) == {"total": sum(range(50))}
    assert len(of_type(events, Event.TYPE_NODE_SUCCEEDED)) == 52
    running = peak = 0
    for event in events:
        if event.type == Event.TYPE_NODE_STARTED:
            running += 1
            peak = max(peak, running)
        elif event.type == Event.TYPE_NODE_SUCCEEDED:
            running -= 1
    assert 2 <= peak <= 16


async def test_node_starts_when_its_dependencies_finish_not_level_by_level(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("eager", [
        node("root", "wf_noop"),
        node("slow", "wf_sleep", {"seconds": 0.8}, ["root"]),
        node("fast", "wf_noop", {}, ["root"]),
        node("after_fast", "wf_noop", {}, ["fast"]),
        node("sink", "wf_noop", {}, ["slow", "after_fast"]),
    ]))
    events = await execute(workflows.stub, stored.workflow_id)
    started = {e.node_id: e.sequence for e in of_type(events, Event.TYPE_NODE_STARTED)}
    done = {e.node_id: e.sequence for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)}
    assert started["after_fast"] < done["slow"]
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED


async def test_retries_with_backoff_then_success(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("retries", [
        node("flaky", "wf_flaky", {"attempt": {"$ref": "context.attempt"}, "fail_times": 2},
             retry_policy={"max_retries": 3, "initial_backoff": 0.05, "backoff_multiplier": 2}),
    ]))
    events = await execute(workflows.stub, stored.workflow_id)
    node_events = [(Event.Type.Name(e.type), e.attempt) for e in events if e.node_id]
    assert node_events == [
        ("TYPE_NODE_SCHEDULED", 1), ("TYPE_NODE_STARTED", 1), ("TYPE_NODE_RETRYING", 1),
        ("TYPE_NODE_SCHEDULED", 2), ("TYPE_NODE_STARTED", 2), ("TYPE_NODE_RETRYING", 2),
        ("TYPE_NODE_SCHEDULED", 3), ("TYPE_NODE_STARTED", 3), ("TYPE_NODE_SUCCEEDED", 3),
    ]
    retrying = of_type(events, Event.TYPE_NODE_RETRYING)
    assert [e.error.type for e in retrying] == ["RuntimeError", "RuntimeError"]
    assert retrying[0].error.message == "flaky failure on attempt 1"
    assert 0.025 <= retrying[0].backoff_seconds < 0.05
    assert 0.05 <= retrying[1].backoff_seconds < 0.1
    assert plain(events[-1].output) == {"flaky": {"attempt": 3}}


async def test_permanent_failure_fail_fast_cancels_running_and_skips_the_rest(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("fail-fast", [
        node("root", "wf_noop"),
        node("bad", "wf_fail", {"why": "bad input"}, ["root"],
             retry_policy={"max_retries": 1, "initial_backoff": 0.01}),
        node("long", "wf_sleep", {"seconds": 20}, ["root"]),
        node("sink", "wf_noop", {}, ["bad", "long"]),
    ], failure_policy="FAILURE_POLICY_FAIL_FAST"))
    started = time.monotonic()
    events = await execute(workflows.stub, stored.workflow_id)
    assert time.monotonic() - started < 10
    assert_gapless(events)
    last = events[-1]
    assert last.type == Event.TYPE_EXECUTION_FAILED
    assert (last.error.type, last.error.node_id) == ("ValueError", "bad")
    assert last.error.message == 'node "bad" failed: boom: bad input'
    failed = of_type(events, Event.TYPE_NODE_FAILED)
    assert [(e.node_id, e.attempt, e.error.type) for e in failed] == [("bad", 2, "ValueError")]
    assert [e.node_id for e in of_type(events, Event.TYPE_NODE_CANCELLED)] == ["long"]
    assert [e.node_id for e in of_type(events, Event.TYPE_NODE_SKIPPED)] == ["sink"]
    execution = (await workflows.stub.GetExecution(pb2.GetExecutionRequest(execution_id=last.execution_id))).execution
    assert {n.node_id: n.state for n in execution.nodes} == {
        "root": NodeState.STATE_SUCCEEDED, "bad": NodeState.STATE_FAILED,
        "long": NodeState.STATE_CANCELLED, "sink": NodeState.STATE_SKIPPED}
    assert execution.state == State.STATE_FAILED
    assert execution.failure_policy == 1


async def test_permanent_failure_continue_finishes_independent_branches(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("continue", [
        node("root", "wf_noop"),
        node("bad", "wf_fail", {}, ["root"]),
        node("after_bad", "wf_noop", {}, ["bad"]),
        node("good", "wf_echo", {"value": 7}, ["root"]),
        node("after_good", "wf_sleep", {"seconds": 0.2, "value": {"$ref": "nodes.good.output.value"}}, ["good"]),
    ]))
    events = await execute(workflows.stub, stored.workflow_id, failure_policy=2)
    last = events[-1]
    assert last.type == Event.TYPE_EXECUTION_FAILED
    assert last.error.node_id == "bad"
    assert [e.node_id for e in of_type(events, Event.TYPE_NODE_SKIPPED)] == ["after_bad"]
    assert of_type(events, Event.TYPE_NODE_CANCELLED) == []
    assert sorted(e.node_id for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)) == ["after_good", "good", "root"]
    execution = (await workflows.stub.GetExecution(pb2.GetExecutionRequest(execution_id=last.execution_id))).execution
    assert {n.node_id: n.state for n in execution.nodes} == {
        "root": NodeState.STATE_SUCCEEDED, "bad": NodeState.STATE_FAILED, "after_bad": NodeState.STATE_SKIPPED,
        "good": NodeState.STATE_SUCCEEDED, "after_good": NodeState.STATE_SUCCEEDED}
    assert plain(next(n for n in execution.nodes if n.node_id == "after_good").output) == {"value": 7}
    assert execution.failure_policy == 2


async def test_node_timeout_fails_the_attempt_with_type_timeout(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("timeout", [
        node("sleepy", "wf_sleep", {"seconds": 10}, timeout_seconds=0.5),
    ]))
    started = time.monotonic()
    events = await execute(workflows.stub, stored.workflow_id)
    assert time.monotonic() - started < 5
    failed = of_type(events, Event.TYPE_NODE_FAILED)
    assert [(e.node_id, e.error.type) for e in failed] == [("sleepy", "timeout")]
    assert events[-1].type == Event.TYPE_EXECUTION_FAILED
    assert events[-1].error.type == "timeout"


@pytest.mark.parametrize("agent", ["wf_nan", "wf_forged_nan"])
async def test_a_nan_output_fails_the_node_with_invalid_output_and_the_execution_stays_readable(
    workflows: Workflows, agent: str
) -> None:
    stored = await create(workflows.stub, definition(f"nan-{agent}", [node("n", agent, {})]))

    events = await execute(workflows.stub, stored.workflow_id)
    answer = await workflows.stub.GetExecution(pb2.GetExecutionRequest(execution_id=events[-1].execution_id))
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["executions", "--address", workflows.address, "get", events[-1].execution_id],
        env={"COLUMNS": "200"},
    )

    assert [(e.node_id, e.error.type) for e in of_type(events, Event.TYPE_NODE_FAILED)] == [("n", "invalid_output")]
    assert events[-1].type == Event.TYPE_EXECUTION_FAILED
    assert answer.execution.state == State.STATE_FAILED
    assert [(n.node_id, n.state, n.error.type) for n in answer.execution.nodes] == [
        ("n", NodeState.STATE_FAILED, "invalid_output")]
    assert not answer.execution.nodes[0].HasField("output")
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "invalid_output" in result.output and "nested" not in result.output


async def test_cancel_stops_the_running_sandbox_within_a_second(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("cancel", [
        node("root", "wf_noop"),
        node("long", "wf_sleep", {"seconds": 30}, ["root"]),
        node("after", "wf_noop", {}, ["long"]),
    ]))
    started = await workflows.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
    execution_id = started.execution.execution_id
    assert started.execution.state == State.STATE_PENDING
    call = workflows.stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id))
    async for answer in call:
        if answer.event.type == Event.TYPE_NODE_STARTED and answer.event.node_id == "long":
            break
    call.cancel()
    await eventually(has_job_processes, timeout=5)
    began = time.monotonic()
    answer = await workflows.stub.CancelExecution(
        pb2.CancelExecutionRequest(execution_id=execution_id, reason="operator said stop"))
    assert time.monotonic() - began < 1.0
    assert answer.execution.state == State.STATE_CANCELLED
    assert (answer.execution.error.type, answer.execution.error.message) == ("cancelled", "operator said stop")
    assert {n.node_id: n.state for n in answer.execution.nodes} == {
        "root": NodeState.STATE_SUCCEEDED, "long": NodeState.STATE_CANCELLED, "after": NodeState.STATE_SKIPPED}
    assert job_processes_under(os.getpid()) == []
    events = await watch(workflows.stub, execution_id)
    assert_gapless(events)
    assert [Event.Type.Name(e.type) for e in events[-3:]] == [
        "TYPE_NODE_CANCELLED", "TYPE_NODE_SKIPPED", "TYPE_EXECUTION_CANCELLED"]
    again = await rpc_error(workflows.stub.CancelExecution(pb2.CancelExecutionRequest(execution_id=execution_id)))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    missing = await rpc_error(workflows.stub.CancelExecution(pb2.CancelExecutionRequest(execution_id="ex_nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_resumes_after_a_dropped_stream_without_gap_or_duplicate(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("chain", [
        node(f"n{i}", "wf_sleep", {"seconds": 0.05, "value": i}, [f"n{i - 1}"] if i else []) for i in range(6)
    ]))
    started = await workflows.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
    execution_id = started.execution.execution_id
    first: list[object] = []
    call = workflows.stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id))
    async for answer in call:
        first.append(answer.event)
        if len(first) == 7:
            break
    call.cancel()
    rest = await watch(workflows.stub, execution_id, after=7)
    full = await watch(workflows.stub, execution_id)
    assert_gapless(full)
    assert [e.sequence for e in first + rest] == [e.sequence for e in full]  # type: ignore[attr-defined]
    assert [(e.type, e.node_id) for e in first + rest] == [(e.type, e.node_id) for e in full]  # type: ignore[attr-defined]
    assert full[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert await watch(workflows.stub, execution_id, after=full[-1].sequence) == []
    tail = await watch(workflows.stub, execution_id, after=full[-1].sequence - 1)
    assert [e.sequence for e in tail] == [full[-1].sequence]


async def test_twenty_concurrent_streamed_executions_all_complete(workflows: Workflows) -> None:
    stored = await create(workflows.stub, diamond("diamond-20"))
    runs = await asyncio.gather(*(execute(workflows.stub, stored.workflow_id, {"x": i}) for i in range(20)))
    for i, events in enumerate(runs):
        assert_gapless(events)
        assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
        assert plain(events[-1].output) == {"d": {"value": 2 * i + 3}}
    assert len({events[0].execution_id for events in runs}) == 20
    listed = await workflows.stub.ListExecutions(
        pb2.ListExecutionsRequest(workflow_id=stored.workflow_id, state=State.STATE_SUCCEEDED, page_size=15))
    assert len(listed.executions) == 15 and listed.next_page_token
    more = await workflows.stub.ListExecutions(pb2.ListExecutionsRequest(
        workflow_id=stored.workflow_id, state=State.STATE_SUCCEEDED, page_size=15, page_token=listed.next_page_token))
    ids = [e.execution_id for e in [*listed.executions, *more.executions]]
    assert sorted(ids) == sorted(events[0].execution_id for events in runs)
    assert more.next_page_token == ""


async def test_large_outputs_are_streamed_as_references(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("big", [node("big", "wf_big", {"size": 100_000})]))
    events = await execute(workflows.stub, stored.workflow_id)
    done = of_type(events, Event.TYPE_NODE_SUCCEEDED)[0]
    assert done.output_ref == f"outputs/{done.execution_id}/big"
    assert not done.HasField("output")
    execution = (await workflows.stub.GetExecution(pb2.GetExecutionRequest(execution_id=done.execution_id))).execution
    assert len(plain(execution.nodes[0].output)["data"]) == 100_000


async def test_node_outcomes_reach_the_registry_metrics(mesh: Mesh, workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("metrics", [node("only", "wf_echo", {"value": 1})]))
    for _ in range(3):
        assert (await execute(workflows.stub, stored.workflow_id))[-1].type == Event.TYPE_EXECUTION_SUCCEEDED

    async def recorded() -> bool:
        agent = (await mesh.registry_stub.GetAgent(reg_pb2.GetAgentRequest(name="wf_echo", exclude_code=True))).agent
        return agent.metrics.success_count >= 3

    await eventually(recorded, timeout=15, step=0.2)


async def test_unknown_ids_and_missing_inputs_get_exact_codes(workflows: Workflows) -> None:
    stub = workflows.stub
    assert (await rpc_error(stub.GetExecution(pb2.GetExecutionRequest(execution_id="ex_missing")))).code() == (
        grpc.StatusCode.NOT_FOUND)
    assert (await rpc_error(stub.StartExecution(pb2.StartExecutionRequest(workflow_id="wf_missing")))).code() == (
        grpc.StatusCode.NOT_FOUND)
    watch_missing = stub.WatchExecution(pb2.WatchExecutionRequest(execution_id="ex_missing"))
    assert (await rpc_error(_drain(watch_missing))).code() == grpc.StatusCode.NOT_FOUND
    stored = await create(stub, diamond("needs-x"))
    error = await rpc_error(stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id,
                                                                          inputs=struct({"y": 1}))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "missing workflow inputs: x"
    again = await stub.StartExecution(pb2.StartExecutionRequest(
        workflow_id=stored.workflow_id, inputs=struct({"x": 1}), request_id="req-1"))
    replay = await stub.StartExecution(pb2.StartExecutionRequest(
        workflow_id=stored.workflow_id, inputs=struct({"x": 1}), request_id="req-1"))
    assert replay.execution.execution_id == again.execution.execution_id
    assert (await watch(stub, again.execution.execution_id))[-1].type == Event.TYPE_EXECUTION_SUCCEEDED


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def test_a_slow_watcher_neither_slows_the_engine_nor_loses_events(mesh: Mesh) -> None:
    small = await mesh.start_workflows(watch_buffer_events=20)
    # 600+ events: more than the watcher's buffer (20) and than HTTP/2 flow control lets through unread.
    middle = [node(f"m{i:03d}", "wf_noop", {}, ["root"]) for i in range(200)]
    stored = await create(small.stub, definition("slow-watcher", [
        node("root", "wf_noop"), *middle, node("sink", "wf_noop", {}, [f"m{i:03d}" for i in range(200)])],
        max_concurrency=32))
    started = await small.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
    execution_id = started.execution.execution_id
    call = small.stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id))
    reader = call.__aiter__()
    first = [(await reader.__anext__()).event]

    async def finished() -> bool:
        answer = await small.stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id))
        return answer.execution.state == State.STATE_SUCCEEDED

    await eventually(finished, timeout=30)  # the engine finished while the watcher read nothing
    rest = [answer.event async for answer in reader]
    events = first + rest
    assert_gapless(events)
    assert len(of_type(events, Event.TYPE_NODE_SUCCEEDED)) == 202
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
