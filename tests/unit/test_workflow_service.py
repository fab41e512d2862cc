"""Workflow use-cases on the in-memory repository, registry and runner (the real engine and in-process bus)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from tdev_common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.unit.fakes.workflow import FakeRegistry, FakeRepository, FakeRunner
from workflow_svc import validation
from workflow_svc.bus import EventBus
from workflow_svc.domain import (
    AgentInfo,
    AttemptResult,
    ErrorInfo,
    EventType,
    ExecutionFilter,
    ExecutionState,
    JsonObject,
    NodeSpec,
    NodeState,
    StartRequest,
    WorkflowSpec,
)
from workflow_svc.engine import Engine, EngineSettings
from workflow_svc.service import ServiceSettings, WorkflowService

DOUBLE = AgentInfo("agent_double00000", "double", "1.0.0", code="DOUBLE", class_name="Double", average_duration_ms=5)
DOUBLE_2 = AgentInfo("agent_double00000", "double", "2.0.0", code="DOUBLE", class_name="Double")
FAIL = AgentInfo("agent_fail0000000", "fail", "1.0.0", code="FAIL", class_name="Fail")
BLOCK = AgentInfo("agent_block000000", "block", "1.0.0", code="BLOCK", class_name="Block")
LIMITS = validation.Limits(max_nodes=10, max_timeout_seconds=600, max_concurrency=8)


def double(inputs: JsonObject) -> AttemptResult:
    return AttemptResult(ok=True, output={"value": inputs["x"] * 2}, duration_ms=1.0)


def fail(inputs: JsonObject) -> AttemptResult:
    return AttemptResult(ok=False, error=ErrorInfo("ValueError", "bad input"), retryable=False)


class Blocking(FakeRunner):
    """Runs BLOCK until cancelled: the node is running when a test cancels the execution."""

    def __init__(self) -> None:
        super().__init__({"DOUBLE": double, "FAIL": fail})
        self.started = asyncio.Event()

    async def run(self, code: str, inputs: JsonObject, timeout_seconds: float, resources: JsonObject,
                  warm_group: str = "") -> AttemptResult:
        if code == "BLOCK":
            self.started.set()
            await asyncio.Event().wait()
        return await super().run(code, inputs, timeout_seconds, resources)


class World:
    """The service wired on fakes, as server.py wires it on adapters."""

    def __init__(self) -> None:
        self.repo = FakeRepository()
        self.registry = FakeRegistry([DOUBLE, DOUBLE_2, FAIL, BLOCK])
        self.runner = Blocking()
        self.bus = EventBus(None, "workflow-unit", 1000)
        self.engine = Engine(EngineSettings(
            worker_id="worker-1", reclaim_own=False, lease_seconds=30, claim_interval_seconds=60,
            max_active_executions=4, default_concurrency=4, default_timeout_seconds=10, inline_output_bytes=65536,
            report_interval_seconds=60, report_batch_size=100, agent_cache_size=16,
        ), self.repo, self.registry, self.runner, self.bus)
        self.service = WorkflowService(ServiceSettings(LIMITS, lease_seconds=30, watch_poll_seconds=0.05,
                                                       cancel_wait_seconds=2.0),
                                       self.repo, self.registry, self.engine, self.bus)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World()
    yield world
    await world.engine.close()


def chain(*, name: str = "chain", second_agent: str = "double", version: str = "") -> WorkflowSpec:
    return WorkflowSpec(
        name=name,
        nodes=(
            NodeSpec(id="first", agent_id="double", agent_version=version, inputs={"x": {"$ref": "inputs.n"}}),
            NodeSpec(id="second", agent_id=second_agent, inputs={"x": {"$ref": "nodes.first.output.value"}},
                     depends_on=("first",)),
        ),
        outputs={"result": "nodes.second.output.value"},
    )


def violations(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in error.violations]


# -- definitions --------------------------------------------------------------------------------------------


async def test_create_workflow_pins_the_latest_agent_versions_and_plans_generations(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    assert workflow.workflow_id.startswith("wf_")
    assert [(n.agent_id, n.agent_version, n.agent_name) for n in workflow.spec.nodes] == [
        ("agent_double00000", "2.0.0", "double"), ("agent_double00000", "2.0.0", "double")]
    assert [g.node_ids for g in workflow.plan.generations] == [("first",), ("second",)]
    assert await world.service.get_workflow(workflow.workflow_id) == workflow


async def test_create_workflow_validate_only_stores_nothing(world: World) -> None:
    checked = await world.service.create_workflow(chain(version="1.0.0"), "req", validate_only=True)
    assert (checked.workflow_id, checked.spec.nodes[0].agent_version) == ("", "1.0.0")
    assert world.repo.workflows == {}


# The fingerprint is opaque to the use-case (the servicer computes it from the request message): any string
# stands for "this request", another string for a different one.


def reused(what: str) -> str:
    """The violation a request id reused for a different request gets (tdev_common.idempotency.RequestIdReused)."""
    return (f"was used before for a different request (the one that made {what}); send the same request to "
            "replay it, or a new request id for a new request")


async def test_create_workflow_replayed_request_id_returns_the_first_workflow(world: World) -> None:
    first = await world.service.create_workflow(chain(), "req-1", validate_only=False, fingerprint="chain")
    again = await world.service.create_workflow(chain(), "req-1", validate_only=False, fingerprint="chain")
    assert again == first
    assert list(world.repo.workflows) == [first.workflow_id]
    assert world.repo.workflow_requests == {"req-1": (first.workflow_id, "chain")}


async def test_create_workflow_request_id_reused_for_another_definition_is_request_id_reused(world: World) -> None:
    first = await world.service.create_workflow(chain(), "req-1", validate_only=False, fingerprint="chain")
    with pytest.raises(InvalidArgument) as caught:
        await world.service.create_workflow(chain(name="other"), "req-1", validate_only=False, fingerprint="other")
    problem = reused(f'workflow "{first.workflow_id}"')
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'req-1' {problem}"
    assert list(world.repo.workflows) == [first.workflow_id]


async def test_create_workflow_request_id_stored_without_a_fingerprint_replays_for_any_request(
        world: World) -> None:
    # A workflow stored before fingerprints existed has none: a replay of its request id keeps working.
    first = await world.service.create_workflow(chain(), "req-1", validate_only=False)
    assert world.repo.workflow_requests == {"req-1": (first.workflow_id, None)}
    again = await world.service.create_workflow(chain(name="other"), "req-1", validate_only=False,
                                                fingerprint="other")
    assert again == first
    assert list(world.repo.workflows) == [first.workflow_id]


async def test_create_workflow_reports_every_structural_problem_at_once(world: World) -> None:
    spec = WorkflowSpec(name="bad", nodes=(
        NodeSpec(id="a", agent_id="double", depends_on=("b",)),
        NodeSpec(id="b", agent_id="double", depends_on=("a", "ghost")),
        NodeSpec(id="a", agent_id="double"),
    ))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.create_workflow(spec, "", validate_only=False)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION")
    assert violations(caught.value) == [
        ("nodes[2].id", 'duplicate id "a" (first used by nodes[0])'),
        ("nodes[1].depends_on[1]", 'unknown node "ghost"'),
        ("nodes[0].depends_on", "cycle: a -> b -> a"),
    ]
    assert caught.value.message == (
        'invalid workflow definition, 3 problems: nodes[2].id: duplicate id "a" (first used by nodes[0]); '
        'nodes[1].depends_on[1]: unknown node "ghost"; nodes[0].depends_on: cycle: a -> b -> a')
    assert world.repo.workflows == {}


async def test_create_workflow_names_unknown_agents_and_versions_per_node(world: World) -> None:
    spec = WorkflowSpec(name="unknown", nodes=(
        NodeSpec(id="a", agent_id="nobody"),
        NodeSpec(id="b", agent_id="double", agent_version="9.9.9", depends_on=("a",)),
    ))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.create_workflow(spec, "", validate_only=False)
    assert caught.value.reason == "INVALID_DEFINITION"
    assert violations(caught.value) == [
        ("nodes[0].agent_id", 'unknown agent "nobody"'),
        ("nodes[1].agent_version", 'agent "double" has no version "9.9.9"'),
    ]


async def test_create_workflow_with_the_registry_down_is_unavailable(world: World) -> None:
    world.registry.down = Unavailable("registry unreachable", reason="DEPENDENCY_UNAVAILABLE")
    with pytest.raises(Unavailable) as caught:
        await world.service.create_workflow(chain(), "", validate_only=False)
    # The dependency's error keeps its code and reason.
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert world.repo.workflows == {}


async def test_create_workflow_with_the_registry_down_still_reports_structural_problems(world: World) -> None:
    world.registry.down = Unavailable("registry unreachable")
    spec = WorkflowSpec(name="", nodes=(NodeSpec(id="a", agent_id="double"),))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.create_workflow(spec, "", validate_only=False)
    assert (caught.value.reason, violations(caught.value)) == ("INVALID_DEFINITION", [
        ("name", "a name is required"), ("nodes", "agents not checked: registry unreachable")])


async def test_get_workflow_unknown_is_not_found_with_its_id(world: World) -> None:
    with pytest.raises(NotFound) as caught:
        await world.service.get_workflow("wf_missing")
    assert (caught.value.reason, caught.value.message, caught.value.metadata) == (
        "WORKFLOW_NOT_FOUND", 'workflow "wf_missing" not found', {"workflow_id": "wf_missing"})


async def _drain(events: AsyncIterator[object]) -> list[object]:
    return [e async for e in events]


@pytest.mark.parametrize(("call", "field"), [
    (lambda s: s.get_workflow(""), "workflow_id"),
    (lambda s: s.get_execution(""), "execution_id"),
    (lambda s: s.cancel("", "why"), "execution_id"),
    (lambda s: _drain(s.watch("", 0)), "execution_id"),
    (lambda s: s.start_execution(StartRequest("", {"n": 1})), "workflow_id"),
    (lambda s: _drain(s.execute(StartRequest("", {"n": 1}))), "workflow_id"),
], ids=["get_workflow", "get_execution", "cancel", "watch", "start_execution", "execute"])
async def test_an_empty_required_id_is_field_required_not_a_lookup(
        world: World, call: Callable[[WorkflowService], Awaitable[object]], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await call(world.service)
    assert (caught.value.reason, violations(caught.value), caught.value.message) == (
        "FIELD_REQUIRED", [(field, "is required")], f"{field}: is required")
    assert world.registry.lookups == [] and world.repo.executions == {}


async def test_list_workflows_pages_newest_first_without_gaps_or_overlap(world: World) -> None:
    created = [await world.service.create_workflow(chain(name=f"wf{i}"), "", validate_only=False) for i in range(5)]
    newest_first = sorted(created, key=lambda w: (w.create_time, w.workflow_id), reverse=True)
    pages, after = [], None
    while True:
        page = await world.service.list_workflows(2, after, "")
        pages.append([w.workflow_id for w in page.items])
        after = page.after
        if after is None:
            break
    assert pages == [[w.workflow_id for w in newest_first[i:i + 2]] for i in (0, 2, 4)]
    filtered = await world.service.list_workflows(10, None, "wf3")
    assert [w.spec.name for w in filtered.items] == ["wf3"]


# -- executions ---------------------------------------------------------------------------------------------


async def test_execute_runs_nodes_in_dependency_order_and_streams_gapless_events(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    events = [e async for batch in world.service.execute(StartRequest(workflow.workflow_id, {"n": 3})) for e in batch]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].type is EventType.EXECUTION_STARTED and events[-1].type is EventType.EXECUTION_SUCCEEDED
    finished = [e.node_id for e in events if e.type is EventType.NODE_SUCCEEDED]
    assert finished == ["first", "second"]
    execution = await world.service.get_execution(events[0].execution_id)
    assert (execution.state, execution.outputs) == (ExecutionState.SUCCEEDED, {"result": 12})
    assert [(n.node_id, n.state, n.output) for n in execution.nodes] == [
        ("first", NodeState.SUCCEEDED, {"value": 6}), ("second", NodeState.SUCCEEDED, {"value": 12})]
    assert [inputs for _, inputs in world.runner.runs] == [{"x": 3}, {"x": 6}]
    assert [(r.agent_id, r.version, r.success) for r in world.repo.outbox] == [
        ("agent_double00000", "2.0.0", True)] * 2


async def test_watch_after_a_sequence_resumes_without_duplicates(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    events = [e async for batch in world.service.execute(StartRequest(workflow.workflow_id, {"n": 1})) for e in batch]
    resumed = [e async for batch in world.service.watch(events[0].execution_id, 3) for e in batch]
    assert resumed == events[3:]


async def test_start_execution_with_missing_inputs_is_invalid_naming_each(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start_execution(StartRequest(workflow.workflow_id, {}))
    assert (caught.value.reason, caught.value.message) == ("MISSING_INPUTS", "missing workflow inputs: n")
    assert violations(caught.value) == [("inputs.n", "required by the workflow")]
    assert world.repo.executions == {}


async def test_start_execution_of_unknown_workflow_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as caught:
        await world.service.start_execution(StartRequest("wf_nope", {}))
    assert (caught.value.reason, caught.value.message, caught.value.metadata) == (
        "WORKFLOW_NOT_FOUND", 'workflow "wf_nope" not found', {"workflow_id": "wf_nope"})


async def test_start_execution_replayed_request_id_returns_the_first_execution(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    first = await world.service.start_execution(
        StartRequest(workflow.workflow_id, {"n": 1}, request_id="r1", fingerprint="n=1"))
    again = await world.service.start_execution(
        StartRequest(workflow.workflow_id, {"n": 1}, request_id="r1", fingerprint="n=1"))
    assert again.execution_id == first.execution_id
    assert list(world.repo.executions) == [first.execution_id]


async def test_start_execution_request_id_reused_for_other_inputs_is_request_id_reused(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    first = await world.service.start_execution(
        StartRequest(workflow.workflow_id, {"n": 1}, request_id="r1", fingerprint="n=1"))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start_execution(
            StartRequest(workflow.workflow_id, {"n": 2}, request_id="r1", fingerprint="n=2"))
    problem = reused(f'execution "{first.execution_id}"')
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'r1' {problem}"
    assert list(world.repo.executions) == [first.execution_id]


async def test_start_execution_request_id_stored_without_a_fingerprint_replays_for_any_request(
        world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    first = await world.service.start_execution(StartRequest(workflow.workflow_id, {"n": 1}, request_id="r1"))
    assert world.repo.executions[first.execution_id].fingerprint is None
    again = await world.service.start_execution(
        StartRequest(workflow.workflow_id, {"n": 2}, request_id="r1", fingerprint="n=2"))
    assert again.execution_id == first.execution_id
    assert list(world.repo.executions) == [first.execution_id]


async def test_failing_node_fails_the_execution_fast_and_skips_its_dependants(world: World) -> None:
    workflow = await world.service.create_workflow(chain(second_agent="fail"), "", validate_only=False)
    events = [e async for batch in world.service.execute(StartRequest(workflow.workflow_id, {"n": 1})) for e in batch]
    assert events[-1].type is EventType.EXECUTION_FAILED
    execution = await world.service.get_execution(events[0].execution_id)
    assert execution.state is ExecutionState.FAILED
    assert execution.error is not None and (execution.error.type, execution.error.node_id) == ("ValueError", "second")
    assert [n.state for n in execution.nodes] == [NodeState.SUCCEEDED, NodeState.FAILED]


async def test_cancel_stops_a_running_execution_and_a_second_cancel_fails(world: World) -> None:
    spec = WorkflowSpec(name="slow", nodes=(NodeSpec(id="wait", agent_id="block"),))
    workflow = await world.service.create_workflow(spec, "", validate_only=False)
    started = await world.service.start_execution(StartRequest(workflow.workflow_id, {}))
    await asyncio.wait_for(world.runner.started.wait(), 5)
    cancelled = await world.service.cancel(started.execution_id, "no longer needed")
    assert cancelled.state is ExecutionState.CANCELLED
    assert [n.state for n in cancelled.nodes] == [NodeState.CANCELLED]
    with pytest.raises(FailedPrecondition) as again:
        await world.service.cancel(started.execution_id, "")
    assert (again.value.reason, again.value.message) == (
        "EXECUTION_ENDED", f'execution "{started.execution_id}" has already ended (cancelled)')
    assert again.value.metadata == {"execution_id": started.execution_id, "state": "CANCELLED"}


async def test_cancel_or_get_of_unknown_execution_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as cancel:
        await world.service.cancel("ex_nope", "")
    with pytest.raises(NotFound) as get:
        await world.service.get_execution("ex_nope")
    for caught in (cancel, get):
        assert (caught.value.reason, caught.value.message, caught.value.metadata) == (
            "EXECUTION_NOT_FOUND", 'execution "ex_nope" not found', {"execution_id": "ex_nope"})


async def test_watch_with_negative_sequence_is_invalid_and_unknown_is_not_found(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        [e async for batch in world.service.watch("ex_x", -1) for e in batch]
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_FIELD", [("after_sequence", "must not be negative")])
    with pytest.raises(NotFound) as missing:
        [e async for batch in world.service.watch("ex_nope", 0) for e in batch]
    assert (missing.value.reason, missing.value.metadata) == ("EXECUTION_NOT_FOUND", {"execution_id": "ex_nope"})


async def test_list_executions_pages_newest_first_and_filters_by_state(world: World) -> None:
    workflow = await world.service.create_workflow(chain(), "", validate_only=False)
    ids = []
    for n in range(3):
        started = world.service.execute(StartRequest(workflow.workflow_id, {"n": n}))
        events = [e async for batch in started for e in batch]
        ids.append(events[0].execution_id)
    first = await world.service.list_executions(ExecutionFilter(workflow_id=workflow.workflow_id), 2, None)
    second = await world.service.list_executions(ExecutionFilter(workflow_id=workflow.workflow_id), 2, first.after)
    assert [e.execution_id for e in [*first.items, *second.items]] == ids[::-1]
    assert second.after is None
    failed = await world.service.list_executions(ExecutionFilter(state=ExecutionState.FAILED), 10, None)
    assert failed.items == []
