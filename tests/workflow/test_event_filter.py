"""ExecuteWorkflow and WatchExecution limited to some event types (event_types), over real gRPC."""

from __future__ import annotations

import grpc
import pytest
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tests.workflow.conftest import (
    Event,
    Workflows,
    create,
    definition,
    execute,
    node,
    plain,
    rpc_error,
    struct,
    watch,
)
from tests.workflow.test_definitions import violations

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

OUTCOMES = [Event.TYPE_NODE_SUCCEEDED, Event.TYPE_NODE_FAILED]


def chain(name: str) -> object:
    return definition(name, [
        node("a", "wf_echo", {"value": 1}),
        node("b", "wf_add", {"values": [{"$ref": "nodes.a.output.value"}, 1]}, ["a"]),
        node("c", "wf_add", {"values": [{"$ref": "nodes.b.output.value"}, 1]}, ["b"]),
    ])


async def test_a_filtered_stream_carries_only_those_types_with_their_sequences_and_the_end(
        workflows: Workflows) -> None:
    stored = await create(workflows.stub, chain("filtered"))

    events = await execute(workflows.stub, stored.workflow_id, event_types=OUTCOMES)
    every = await watch(workflows.stub, events[-1].execution_id)

    kept = [e for e in every if e.type in OUTCOMES or e.type == Event.TYPE_EXECUTION_SUCCEEDED]
    assert [(e.sequence, e.type, e.node_id) for e in events] == [(e.sequence, e.type, e.node_id) for e in kept]
    assert [e.node_id for e in events[:-1]] == ["a", "b", "c"]
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED  # not asked for, sent anyway: the stream's end
    assert plain(events[-1].output) == {"c": {"value": 3}}
    assert len(every) > len(events)


async def test_watch_filters_stored_events_after_a_sequence(workflows: Workflows) -> None:
    stored = await create(workflows.stub, chain("watched"))
    every = await execute(workflows.stub, stored.workflow_id)
    after = next(e.sequence for e in every if e.type == Event.TYPE_NODE_SUCCEEDED and e.node_id == "a")

    call = workflows.stub.WatchExecution(pb2.WatchExecutionRequest(
        execution_id=every[-1].execution_id, after_sequence=after, event_types=[Event.TYPE_NODE_STARTED]))
    events = [answer.event async for answer in call]

    assert [(e.type, e.node_id) for e in events] == [
        (Event.TYPE_NODE_STARTED, "b"), (Event.TYPE_NODE_STARTED, "c"), (Event.TYPE_EXECUTION_SUCCEEDED, "")]
    assert all(e.sequence > after for e in events)


@pytest.mark.parametrize(("types", "field"), [([0], "event_types[0]"), ([8, 99], "event_types[1]")])
async def test_an_unknown_event_type_is_invalid_and_starts_nothing(
        workflows: Workflows, types: list[int], field: str) -> None:
    stored = await create(workflows.stub, chain(f"bad-types-{field}"))

    error = await rpc_error(execute(workflows.stub, stored.workflow_id, event_types=types))
    listed = await workflows.stub.ListExecutions(pb2.ListExecutionsRequest(workflow_id=stored.workflow_id))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in violations(error)] == [field]
    assert list(listed.executions) == []


async def test_a_replayed_request_id_with_another_filter_streams_the_same_execution(workflows: Workflows) -> None:
    stored = await create(workflows.stub, chain("replayed"))
    request = {"workflow_id": stored.workflow_id, "inputs": struct({}), "request_id": "filter-replay-1"}

    first = [a.event async for a in workflows.stub.ExecuteWorkflow(pb2.ExecuteWorkflowRequest(**request))]
    again = [a.event async for a in workflows.stub.ExecuteWorkflow(
        pb2.ExecuteWorkflowRequest(**request, event_types=[Event.TYPE_NODE_SUCCEEDED]))]

    assert {e.execution_id for e in again} == {first[-1].execution_id}
    assert [e.type for e in again] == [Event.TYPE_NODE_SUCCEEDED] * 3 + [Event.TYPE_EXECUTION_SUCCEEDED]
