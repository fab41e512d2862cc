"""CreateWorkflow / GetWorkflow / ListWorkflows over real gRPC: validation, pinning, plans, paging."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tests.workflow.conftest import (
    ROOT,
    Mesh,
    Workflows,
    create,
    definition,
    node,
    rpc_error,
)
from workflow_svc.convert import workflow_from_json

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of an error."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.extend((v.field, v.description) for v in bad.field_violations)
    return found


async def test_every_problem_is_reported_at_once_with_its_path(workflows: Workflows) -> None:
    workflow = definition("broken", [
        node("a", "wf_echo"),
        node("b", "wf_echo", {"v": {"$ref": "nodes.c.output.value"}}, ["a"]),
        node("c", "wf_echo", {}, ["a", "x"]),
        node("a", "wf_echo", {}, ["b"]),
        node("d", "wf_echo", {}, ["e"], retry_policy={"max_retries": 11, "backoff_multiplier": 0.5}),
        node("e", "wf_echo", {}, ["d"], timeout_seconds=-1),
        node("f", "no_such_agent", {"v": {"$ref": "oops.x"}}, ["a"]),
    ])
    error = await rpc_error(workflows.stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=workflow)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [
        ("nodes[3].id", 'duplicate id "a" (first used by nodes[0])'),
        ("nodes[4].retry_policy.max_retries", "must be 0 to 10, got 11"),
        ("nodes[4].retry_policy.backoff_multiplier", "must be 1 to 10 (0: default 2), got 0.5"),
        ("nodes[5].timeout_seconds", "must be 0 to 3600 seconds, got -1.0"),
        ("nodes[2].depends_on[1]", 'unknown node "x"'),
        ("nodes[4].depends_on", "cycle: d -> e -> d"),
        ("nodes", "the graph is disconnected: 2 separate parts: {a, b, c, f}; {d, e}"),
        ("nodes[1].inputs.v", '"$ref" nodes.c.output.value: node "c" is not an ancestor of "b"'),
        ("nodes[6].inputs.v", '"oops.x" must start with inputs., nodes. or context.'),
        ("nodes[6].agent_id", 'unknown agent "no_such_agent"'),
    ]
    assert error.details().startswith("invalid workflow definition, 10 problems: nodes[3].id: duplicate id")


async def test_cycle_through_a_self_dependency_and_too_many_nodes(workflows: Workflows) -> None:
    error = await rpc_error(create(workflows.stub, definition("self", [node("a", "wf_echo", {}, ["a"])])))
    assert violations(error) == [("nodes[0].depends_on", "cycle: a -> a")]
    chain = [node(f"n{i}", "wf_noop", {}, [f"n{i - 1}"] if i else []) for i in range(1001)]
    error = await rpc_error(create(workflows.stub, definition("huge", chain)))
    assert violations(error) == [("nodes", "1001 nodes; at most 1000 are allowed")]


async def test_unknown_version_names_the_agent_version_field(workflows: Workflows) -> None:
    error = await rpc_error(create(workflows.stub, definition("version", [
        node("a", "wf_echo", agent_version="9.9.9")])))
    assert violations(error) == [("nodes[0].agent_version", 'agent "wf_echo" has no version "9.9.9"')]


async def test_agents_named_by_name_are_pinned_to_id_and_version(mesh: Mesh, workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("pinned", [
        node("a", "wf_echo", {"value": {"$ref": "inputs.x"}}),
        node("b", mesh.agents["wf_add"], {"values": [1]}, ["a"]),
    ], metadata={"team": "platform"}, version="1.2.0"))
    assert stored.workflow_id.startswith("wf_") and len(stored.workflow_id) == 15
    assert [(n.agent_id, n.agent_name, n.agent_version) for n in stored.nodes] == [
        (mesh.agents["wf_echo"], "wf_echo", "1.0.0"), (mesh.agents["wf_add"], "wf_add", "1.0.0")]
    fetched = (await workflows.stub.GetWorkflow(pb2.GetWorkflowRequest(workflow_id=stored.workflow_id))).workflow
    assert fetched == stored
    assert fetched.version == "1.2.0"
    assert dict(fetched.metadata) == {"team": "platform"}


async def test_plan_has_generations_critical_path_and_priorities(workflows: Workflows) -> None:
    stored = await create(workflows.stub, definition("plan", [
        node("src", "wf_noop"),
        node("left", "wf_noop", {}, ["src"]),
        node("right", "wf_noop", {}, ["src"]),
        node("right2", "wf_noop", {}, ["right"]),
        node("sink", "wf_noop", {}, ["left", "right2"]),
    ]))
    plan = stored.plan
    assert [list(g.node_ids) for g in plan.generations] == [["src"], ["left", "right"], ["right2"], ["sink"]]
    assert list(plan.critical_path) == ["src", "right", "right2", "sink"]
    assert dict(plan.priorities) == {"src": 4, "right": 3, "right2": 2, "left": 2, "sink": 1}
    again = await create(workflows.stub, definition("plan", [
        node("src", "wf_noop"),
        node("left", "wf_noop", {}, ["src"]),
        node("right", "wf_noop", {}, ["src"]),
        node("right2", "wf_noop", {}, ["right"]),
        node("sink", "wf_noop", {}, ["left", "right2"]),
    ]))
    assert again.plan == plan


async def test_validate_only_and_request_id_replay(workflows: Workflows) -> None:
    workflow = definition("once", [node("a", "wf_noop")])
    checked = await workflows.stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=workflow, validate_only=True))
    assert checked.workflow.workflow_id == "" and [list(g.node_ids) for g in checked.workflow.plan.generations] == [
        ["a"]]
    first = await workflows.stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=workflow, request_id="wf-req-1"))
    again = await workflows.stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=workflow, request_id="wf-req-1"))
    assert again.workflow.workflow_id == first.workflow.workflow_id
    listed = await workflows.stub.ListWorkflows(pb2.ListWorkflowsRequest(name_contains="once"))
    assert [w.workflow_id for w in listed.workflows] == [first.workflow.workflow_id]


async def test_list_workflows_pages_newest_first(workflows: Workflows) -> None:
    ids = [(await create(workflows.stub, definition(f"paged-{i}", [node("a", "wf_noop")]))).workflow_id
           for i in range(3)]
    page = await workflows.stub.ListWorkflows(pb2.ListWorkflowsRequest(name_contains="paged-", page_size=2))
    assert [w.workflow_id for w in page.workflows] == ids[::-1][:2]
    rest = await workflows.stub.ListWorkflows(
        pb2.ListWorkflowsRequest(name_contains="paged-", page_size=2, page_token=page.next_page_token))
    assert [w.workflow_id for w in rest.workflows] == [ids[0]]
    assert rest.next_page_token == ""
    bad = await rpc_error(workflows.stub.ListWorkflows(pb2.ListWorkflowsRequest(page_token="garbage")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = await rpc_error(workflows.stub.GetWorkflow(pb2.GetWorkflowRequest(workflow_id="wf_nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_example_files_parse_in_the_seed_plan_shape() -> None:
    files = sorted((ROOT / "examples" / "workflows").glob("*.json"))
    assert len(files) >= 4
    for path in files:
        workflow = workflow_from_json(path.read_text())
        assert workflow.name and workflow.nodes, path
    seed = {
        "name": "seed", "version": "1.0.0", "metadata": {"owner": "x"},
        "nodes": [{"id": "a", "agent_id": "wf_noop", "inputs": {"k": 1}, "depends_on": [],
                   "retry_policy": {"max_retries": 2, "backoff_multiplier": 2.0, "max_backoff": 10},
                   "timeout_seconds": 30, "required_resources": {"memory_mb": 128}}],
    }
    parsed = workflow_from_json(json.dumps(seed))
    assert parsed.nodes[0].retry_policy.max_retries == 2
    assert parsed.nodes[0].timeout_seconds == 30


async def test_registry_down_is_unavailable_at_create_time_and_retried_at_run_time(
    mesh: Mesh, workflows: Workflows
) -> None:
    from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

    from tests.workflow.conftest import Event, execute, of_type
    from workflow_svc.config import WorkflowSettings
    from workflow_svc.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    # Created while the registry is up (agents checked and pinned) ...
    stored = await create(workflows.stub, definition("registry-outage", [
        node("a", "wf_noop", retry_policy={"max_retries": 1, "initial_backoff": 0.05})]))
    common = mesh.common().model_copy(update={"registry_address": dead})
    handle = await create_server(
        WorkflowSettings(database_url=mesh.database_url, registry_deadline_seconds=1.0), common, port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb2_grpc.WorkflowServiceStub(channel)
            began = time.monotonic()
            error = await rpc_error(create(stub, definition("down", [node("a", "wf_noop")])))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "registry GetAgent" in error.details()
            assert time.monotonic() - began < 10
            # ... and run by a replica that cannot reach the registry: the attempt fails and is retried.
            events = await execute(stub, stored.workflow_id)
            assert [(e.type, e.attempt, e.error.type) for e in events if e.type in (
                Event.TYPE_NODE_RETRYING, Event.TYPE_NODE_FAILED)] == [
                (Event.TYPE_NODE_RETRYING, 1, "registry_unavailable"),
                (Event.TYPE_NODE_FAILED, 2, "registry_unavailable")]
            assert of_type(events, Event.TYPE_EXECUTION_FAILED)[0].error.type == "registry_unavailable"
    finally:
        await handle.close(grace=1.0)


async def register_examples(mesh: Mesh) -> None:
    """Registers examples/agents and the retries example's flaky agent (idempotent)."""
    from tdev.registry.v1 import registry_service_pb2 as reg_pb2

    sources = {p.stem: p for p in (ROOT / "examples" / "agents").glob("*.py")}
    sources["flaky_fetch"] = ROOT / "examples" / "workflows" / "agents" / "flaky_fetch.py"
    for name, path in sorted(sources.items()):
        await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name=name, code=path.read_text()))


async def test_example_workflows_run_with_the_example_agents(mesh: Mesh, workflows: Workflows) -> None:
    from tests.workflow.conftest import Event, execute, of_type, plain

    await register_examples(mesh)

    async def run(file: str, inputs: dict[str, object], **fields: object) -> list[object]:
        workflow = workflow_from_json((ROOT / "examples" / "workflows" / file).read_text())
        stored = await create(workflows.stub, workflow)
        return await execute(workflows.stub, stored.workflow_id, inputs, **fields)

    events = await run("text_report.json", {"text": "Graphs graphs everywhere, and graphs of agents"})
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output)["report"]["words"] == 7

    events = await run("retries.json", {"numbers": [1, 2, 3]})
    assert plain(events[-1].output) == {"total": 6, "attempts": 3}
    assert len(of_type(events, Event.TYPE_NODE_RETRYING)) == 2

    events = await run("failure_policies.json", {"numbers": [3, 1, 2], "labels": ["a", "b"]})
    assert events[-1].type == Event.TYPE_EXECUTION_FAILED
    assert [e.node_id for e in of_type(events, Event.TYPE_NODE_SKIPPED)] == ["after_bad_sum"]
    assert sorted(e.node_id for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)) == ["sort", "stats"]
    events = await run("failure_policies.json", {"numbers": [3, 1, 2], "labels": ["a", "b"]}, failure_policy=1)
    assert events[-1].type == Event.TYPE_EXECUTION_FAILED

    events = await run("generated_100_nodes.json", {"seed": 1})
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output) == {"total": 256 * (11 * 1 + 55)}
    assert len(of_type(events, Event.TYPE_NODE_SUCCEEDED)) == 100


async def test_embedded_sqlite_without_redis_runs_and_resumes_its_own_work(mesh: Mesh, tmp_path: Path) -> None:
    from tests.workflow.conftest import Event, execute, plain, watch

    url = f"sqlite+aiosqlite:///{tmp_path / 'workflow.sqlite'}"
    embedded = await mesh.start_workflows(database_url=url, redis=False, worker_id="embedded")
    stored = await create(embedded.stub, definition("embedded", [
        node("a", "wf_echo", {"value": {"$ref": "inputs.x"}}),
        node("b", "wf_add", {"values": [{"$ref": "nodes.a.output.value"}, 1]}, ["a"]),
        node("slow", "wf_sleep", {"seconds": {"$ref": "inputs.pause"}}, ["b"]),
    ]))
    events = await execute(embedded.stub, stored.workflow_id, {"x": 4, "pause": 0})
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert plain(events[-1].output) == {"slow": {"value": None}}
    # A graceful stop mid-run gives the lease back; the restarted process finishes without re-running a and b.
    started = await embedded.stub.StartExecution(pb2.StartExecutionRequest(
        workflow_id=stored.workflow_id, inputs=_struct({"x": 5, "pause": 2})))
    execution_id = started.execution.execution_id
    call = embedded.stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id))
    async for answer in call:
        if answer.event.type == Event.TYPE_NODE_STARTED and answer.event.node_id == "slow":
            break
    call.cancel()
    await embedded.close()
    mesh.started.remove(embedded)
    again = await mesh.start_workflows(database_url=url, redis=False, worker_id="embedded")
    events = await watch(again.stub, execution_id)
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    assert [e.node_id for e in events if e.type == Event.TYPE_NODE_STARTED] == ["a", "b", "slow", "slow"]


def _struct(value: dict[str, object]) -> object:
    from tests.workflow.conftest import struct

    return struct(value)


async def test_cli_creates_runs_and_follows_a_workflow(mesh: Mesh, workflows: Workflows) -> None:
    import asyncio

    from typer.testing import CliRunner

    from tdev_cli.main import app

    await register_examples(mesh)
    runner = CliRunner()
    example = str(ROOT / "examples" / "workflows" / "retries.json")

    def invoke(*args: str) -> object:
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    created = await asyncio.to_thread(invoke, "workflows", "--address", workflows.address, "create", example)
    assert created.exit_code == 0, created.output  # type: ignore[attr-defined]
    assert "workflow_id: wf_" in created.output  # type: ignore[attr-defined]
    ran = await asyncio.to_thread(
        invoke, "workflows", "--address", workflows.address, "run", example, "--input", "numbers=[4, 5]", "--follow")
    assert ran.exit_code == 0, ran.output  # type: ignore[attr-defined]
    output = ran.output  # type: ignore[attr-defined]
    assert "succeeded" in output and '"total": 9' in output and '"attempts": 3' in output
    execution_id = next(w for w in output.split() if w.startswith("ex_"))
    watched = await asyncio.to_thread(invoke, "executions", "--address", workflows.address, "watch", execution_id)
    assert watched.exit_code == 0 and '"total": 9' in watched.output  # type: ignore[attr-defined]
    bad = await asyncio.to_thread(invoke, "executions", "--address", workflows.address, "cancel", execution_id)
    assert bad.exit_code == 1 and "FAILED_PRECONDITION" in bad.output  # type: ignore[attr-defined]
