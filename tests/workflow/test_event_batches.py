"""ExecuteWorkflow and WatchExecution with batch_events: the same events, in order, in fewer messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tests.workflow.conftest import Event, Workflows, create, definition, execute, node, struct, watch
from workflow_svc import convert
from workflow_svc.domain import Event as DomainEvent
from workflow_svc.domain import EventType

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


def fan_out(name: str, width: int) -> Any:
    return definition(name, [node("start", "wf_echo", {"value": 0}),
                             *[node(f"n{i:02d}", "wf_echo", {"value": i}, ["start"]) for i in range(width)],
                             node("end", "wf_noop", {}, [f"n{i:02d}" for i in range(width)])])


def key(event: Any) -> tuple[int, int, str, int]:
    return event.sequence, event.type, event.node_id, event.attempt


async def batched_execute(workflows: Workflows, workflow_id: str, **fields: Any) -> list[pb2.ExecuteWorkflowResponse]:
    call = workflows.stub.ExecuteWorkflow(pb2.ExecuteWorkflowRequest(
        workflow_id=workflow_id, inputs=struct({}), batch_events=True, **fields))
    return [answer async for answer in call]


async def test_a_batched_stream_carries_every_event_once_in_order_in_fewer_messages(workflows: Workflows) -> None:
    stored = await create(workflows.stub, fan_out("batched", 12))

    answers = await batched_execute(workflows, stored.workflow_id)
    events = [e for answer in answers for e in answer.events]
    stored_events = await watch(workflows.stub, events[-1].execution_id)

    assert all(len(answer.events) >= 1 and not answer.HasField("event") for answer in answers)
    assert [key(e) for e in events] == [key(e) for e in stored_events]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert len(answers) < len(events)  # the fan-out's events come together


async def test_batched_and_filtered_keeps_only_those_types_and_the_end(workflows: Workflows) -> None:
    stored = await create(workflows.stub, fan_out("batched-filtered", 5))

    answers = await batched_execute(workflows, stored.workflow_id, event_types=[Event.TYPE_NODE_SUCCEEDED])
    events = [e for answer in answers for e in answer.events]

    assert all(answer.events for answer in answers)
    assert [e.type for e in events] == [Event.TYPE_NODE_SUCCEEDED] * 7 + [Event.TYPE_EXECUTION_SUCCEEDED]


async def test_a_batched_watch_from_storage_equals_the_unbatched_one(workflows: Workflows) -> None:
    stored = await create(workflows.stub, fan_out("batched-watch", 8))
    every = await execute(workflows.stub, stored.workflow_id)
    execution_id, after = every[-1].execution_id, every[3].sequence

    call = workflows.stub.WatchExecution(pb2.WatchExecutionRequest(
        execution_id=execution_id, after_sequence=after, batch_events=True))
    answers = [answer async for answer in call]
    unbatched = await watch(workflows.stub, execution_id, after)

    assert len(answers) == 1  # one storage page, one message
    assert [key(e) for e in answers[0].events] == [key(e) for e in unbatched] == [key(e) for e in every[4:]]


async def test_event_messages_cut_a_batch_at_its_count_and_size_bounds() -> None:
    def event(sequence: int, output: dict[str, Any] | None = None) -> DomainEvent:
        return DomainEvent(execution_id="e", sequence=sequence, type=EventType.NODE_SUCCEEDED, node_id="n",
                           time=datetime(2026, 1, 1, tzinfo=UTC), output=output)

    async def batches(*lists: list[DomainEvent]) -> Any:
        for one in lists:
            yield one

    many = [event(i) for i in range(1, convert.BATCH_MAX_EVENTS + 3)]
    cut = [m async for m in convert.event_messages(batches(many))]
    assert [len(m) for m in cut] == [convert.BATCH_MAX_EVENTS, 2]

    big = [event(i, {"blob": "x" * 400_000}) for i in range(1, 6)]
    sized = [m async for m in convert.event_messages(batches(big, [event(6)]))]
    assert [len(m) for m in sized] == [2, 2, 1, 1]  # about 1 MiB a message; batches are never merged
    assert all(sum(e.ByteSize() for e in m) <= convert.BATCH_MAX_BYTES for m in sized)
    assert [e.sequence for m in sized for e in m] == list(range(1, 7))
