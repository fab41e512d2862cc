"""The typed client against the real mesh (four services in this process, SQLite, real sandbox): every RPC
through its method, errors as exceptions with their details, and watches that survive a dropped connection."""

from __future__ import annotations

import asyncio
import json
import re
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tdev.builder.v1 import builder_service_pb2
from tdev.evolution.v1 import evolution_service_pb2
from tdev.registry.v1 import registry_service_pb2
from tdev.workflow.v1 import workflow_service_pb2

from tdev_client import (
    BuilderClient,
    Connection,
    EvolutionClient,
    FailedPrecondition,
    InvalidArgument,
    Mesh,
    NotFound,
    RegistryClient,
    Unauthenticated,
    Unavailable,
    WatchPolicy,
    WorkflowClient,
    types,
)
from tdev_common.config import CommonSettings
from tests.support.inprocess_mesh import inprocess_mesh
from tests.support.netproxy import tcp_proxy
from tests.support.ports import free_port
from tests.workflow.conftest import AGENTS

pytestmark = pytest.mark.mesh

CLIENTS = {"RegistryService": RegistryClient, "WorkflowService": WorkflowClient,
           "BuilderService": BuilderClient, "EvolutionService": EvolutionClient}
SCALER = '''
class Scaler:
    """Scales x by a factor."""

    def get_capabilities(self):
        return {"name": "scaler", "description": "scales a number"}

    def execute(self, inputs):
        return {"y": inputs["x"] * 2}
'''
SCALER_SUITE = {"cases": [{"name": f"x{x}", "inputs": {"x": x}, "expected": {"y": 3 * x}} for x in range(1, 5)]}
TOKENS = json.dumps({"tokens": [{"name": "ops", "token": "ops-token-0123456789abcdef", "permissions": ["*"]}]})


def connection(ports: dict[str, int], tmp_path: Path, **extra: Any) -> Connection:
    """Addresses of this mesh, ignoring the environment and any profiles file of the machine."""
    return Connection.resolve(environ={}, profiles_file=tmp_path / "no-profiles.toml",
                              **{name: f"127.0.0.1:{port}" for name, port in ports.items()}, **extra)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    async with inprocess_mesh(common) as ports, Mesh(connection(ports, tmp_path)) as client:
        yield client


def assert_shape(value: dict[str, Any], shape: Any) -> None:
    """The dict has every always-present key of its TypedDict and no key it does not declare, recursively for
    the nested messages."""
    assert set(shape.__required_keys__) <= set(value) <= set(shape.__annotations__), (shape.__name__, set(value))
    hints = typing.get_type_hints(shape)
    for key, item in value.items():
        hint = hints[key]
        while typing.get_origin(hint) in (typing.NotRequired, typing.Required):
            hint = typing.get_args(hint)[0]
        if typing.is_typeddict(hint):
            assert_shape(item, hint)
        elif typing.get_origin(hint) is list and typing.is_typeddict(typing.get_args(hint)[0]):
            for element in item:
                assert_shape(element, typing.get_args(hint)[0])


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_rpc_of_every_service_has_a_client_method() -> None:
    for module in (registry_service_pb2, workflow_service_pb2, builder_service_pb2, evolution_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            missing = [m.name for m in service.methods if not callable(getattr(CLIENTS[service.name],
                                                                              snake(m.name), None))]
            assert missing == [], f"{service.full_name} has no client method for {missing}"


async def register(mesh: Mesh, name: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    answer = await mesh.registry.register_agent(name, code or AGENTS[name], **extra)
    return dict(answer["agent"])


async def test_registry_rpcs_take_and_give_plain_values(mesh: Mesh) -> None:
    echo = await register(mesh, "wf_echo", labels={"team": "core"})
    again = await mesh.registry.register_agent("wf_echo", AGENTS["wf_echo"])
    assert (again["created"], again["agent"]["version"]) == (False, echo["version"])
    child = await register(mesh, "wf_add", parents=[{"agent_id": echo["agent_id"], "version": echo["version"]}])

    by_id = await mesh.registry.get_agent(echo["agent_id"])
    by_name = await mesh.registry.get_agent("wf_echo", exclude_code=True)
    assert by_id["labels"] == {"team": "core"} and "class Echo" in by_id["code"]
    assert (by_name["agent_id"], by_name["code"]) == (echo["agent_id"], "")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", by_id["create_time"])
    assert_shape(by_id, types.Agent)

    first = await mesh.registry.list_agents(page_size=1)
    assert len(first.items) == 1 and first.next_page_token
    assert sorted([a["name"] async for a in mesh.registry.iter_agents()]) == ["wf_add", "wf_echo"]
    versions = await mesh.registry.list_agent_versions("wf_echo")
    assert [v["version"] for v in versions.items] == [echo["version"]] and versions.next_page_token == ""
    lineage = await mesh.registry.get_agent_lineage(child["agent_id"])
    assert [(e["parent"]["agent_id"], e["child"]["agent_id"]) for e in lineage["edges"]] == [
        (echo["agent_id"], child["agent_id"])]
    assert isinstance(await mesh.registry.search_agents("echo a value"), list)

    record = {"execution_id": "exec_client_1", "agent_id": echo["agent_id"], "version": echo["version"],
              "success": True, "duration_ms": 12.5}
    assert await mesh.registry.record_executions([record]) == {"accepted_count": 1, "duplicate_count": 0}
    assert await mesh.registry.record_executions([record]) == {"accepted_count": 0, "duplicate_count": 1}
    labelled = await mesh.registry.update_agent_labels(echo["agent_id"], echo["version"],
                                                       set_labels={"tier": "gold"}, remove_labels=["team"])
    assert labelled["labels"] == {"tier": "gold"}


async def test_workflow_rpcs_and_whole_numbers_survive_the_struct(mesh: Mesh) -> None:
    echo = await register(mesh, "wf_echo")
    sleep = await register(mesh, "wf_sleep")
    definition = {"name": "client-echo", "nodes": [
        {"id": "a", "agent_id": echo["agent_id"], "inputs": {"value": {"$ref": "inputs.n"}}}]}
    checked = await mesh.workflows.create_workflow(definition, validate_only=True)
    assert checked["workflow_id"] == ""
    workflow = await mesh.workflows.create_workflow(definition)
    assert (await mesh.workflows.get_workflow(workflow["workflow_id"]))["name"] == "client-echo"
    assert [w["workflow_id"] async for w in mesh.workflows.iter_workflows(name_contains="client")] == [
        workflow["workflow_id"]]
    assert (await mesh.workflows.list_workflows(page_size=1)).items[0]["workflow_id"] == workflow["workflow_id"]

    streamed = [e async for e in mesh.workflows.execute_workflow(workflow["workflow_id"], {"n": 7})]
    assert streamed[-1]["type"] == "TYPE_EXECUTION_SUCCEEDED"
    execution = await mesh.workflows.get_execution(streamed[0]["execution_id"])
    assert_shape(execution, types.Execution)
    for event in streamed:
        assert_shape(event, types.ExecutionEvent)
    assert execution["state"] == "STATE_SUCCEEDED"
    assert execution["outputs"]["a"] == {"value": 7} and isinstance(execution["outputs"]["a"]["value"], int)

    started = await mesh.workflows.start_execution(workflow["workflow_id"], {"n": 8})
    events = [e async for e in mesh.workflows.watch_execution(started["execution_id"])]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    outcomes = [e async for e in mesh.workflows.watch_execution(
        started["execution_id"], event_types=["TYPE_NODE_SUCCEEDED"])]
    assert [e["type"] for e in outcomes] == ["TYPE_NODE_SUCCEEDED", "TYPE_EXECUTION_SUCCEEDED"]
    assert [e for e in events if e["type"] in ("TYPE_NODE_SUCCEEDED", "TYPE_EXECUTION_SUCCEEDED")] == outcomes
    only = [e["type"] async for e in mesh.workflows.execute_workflow(
        workflow["workflow_id"], {"n": 9}, event_types=["TYPE_NODE_STARTED"])]
    assert only == ["TYPE_NODE_STARTED", "TYPE_EXECUTION_SUCCEEDED"]
    assert [e["execution_id"] async for e in mesh.workflows.iter_executions(workflow_id=workflow["workflow_id"])]
    done = await mesh.workflows.list_executions(workflow_id=workflow["workflow_id"], state="STATE_SUCCEEDED")
    assert len(done.items) == 3

    slow = await mesh.workflows.create_workflow({"name": "client-slow", "nodes": [
        {"id": "nap", "agent_id": sleep["agent_id"], "inputs": {"seconds": 30}}]})
    running = await mesh.workflows.start_execution(slow["workflow_id"])
    cancelled = await mesh.workflows.cancel_execution(running["execution_id"], reason="enough")
    assert cancelled["execution_id"] == running["execution_id"]
    async for event in mesh.workflows.watch_execution(running["execution_id"]):
        last = event
    assert last["type"] == "TYPE_EXECUTION_CANCELLED"


async def test_builder_rpcs(mesh: Mesh) -> None:
    build = await mesh.builds.start_build("Sort the numbers in ascending order", request_id="client-build-1")
    events = [e async for e in mesh.builds.watch_build(build["build_id"])]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    done = await mesh.builds.get_build(build["build_id"])
    assert_shape(done, types.Build)
    assert done["state"] == "STATE_SUCCEEDED", done.get("error")
    assert (await mesh.builds.start_build("Sort the numbers in ascending order",
                                          request_id="client-build-1"))["build_id"] == build["build_id"]
    streamed = [e async for e in mesh.builds.build_service("Reverse the text")]
    assert streamed[-1]["build_id"] and streamed[-1]["type"].startswith("TYPE_BUILD_")
    assert {b["build_id"] async for b in mesh.builds.iter_builds()} >= {build["build_id"]}
    assert len((await mesh.builds.list_builds(page_size=1)).items) == 1
    with pytest.raises(FailedPrecondition) as raised:
        await mesh.builds.cancel_build(build["build_id"])
    assert raised.value.request_id
    cancelled = await mesh.builds.cancel_build(
        (await mesh.builds.start_build("Count the words of the text"))["build_id"], reason="changed my mind")
    assert cancelled["build_id"]


async def test_evolution_rpcs(mesh: Mesh) -> None:
    scaler = (await mesh.registry.register_agent("scaler", SCALER))["agent"]
    run = await mesh.evolution.start_evolution(scaler["agent_id"], SCALER_SUITE, config={
        "population_size": 8, "generations": 3, "seed": 7, "plateau_generations": 0, "promote": False})
    events = [e async for e in mesh.evolution.watch_evolution(run["run_id"])]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    finished = await mesh.evolution.get_evolution(run["run_id"], exclude_code=True)
    assert_shape(finished, types.EvolutionRun)
    assert finished["state"] in ("STATE_SUCCEEDED", "STATE_FAILED") and finished["generations"]
    assert [r["run_id"] async for r in mesh.evolution.iter_evolutions(agent_id=scaler["agent_id"])] == [
        run["run_id"]]
    assert (await mesh.evolution.list_evolutions(page_size=5)).items[0]["run_id"] == run["run_id"]
    first = await mesh.evolution.list_candidates(run["run_id"], page_size=2)
    assert len(first.items) == 2 and first.next_page_token
    assert_shape(first.items[0], types.Candidate)
    seed = first.items[0]
    assert (seed["generation"], seed["operator"], seed["code"], seed["parent_hashes"]) == (0, "seed", SCALER, [])
    every = [c async for c in mesh.evolution.iter_candidates(run["run_id"], page_size=3, exclude_code=True)]
    assert len(every) == 1 + sum(r["evaluations"] for r in finished["generations"])
    assert [c["code_hash"] for c in every[:2]] == [c["code_hash"] for c in first.items]
    assert {c["code"] for c in every} == {""}
    hashes = {c["code_hash"] for c in every}
    assert all(c["parent_hashes"] and set(c["parent_hashes"]) <= hashes for c in every[1:])
    with pytest.raises(NotFound) as unknown:
        await mesh.evolution.list_candidates("evo_000000000000")
    assert unknown.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(InvalidArgument) as bad_token:
        await mesh.evolution.list_candidates(run["run_id"], page_token="garbage")
    assert bad_token.value.reason == "INVALID_PAGE_TOKEN"
    long = await mesh.evolution.start_evolution(scaler["agent_id"], SCALER_SUITE, config={
        "population_size": 8, "generations": 500, "plateau_generations": 0})
    cancelled = await mesh.evolution.cancel_evolution(long["run_id"], reason="enough")
    assert cancelled["state"] == "STATE_CANCELLED"


async def test_errors_carry_code_reason_violations_and_request_id(mesh: Mesh) -> None:
    with pytest.raises(NotFound) as missing:
        await mesh.workflows.get_workflow("wf_000000000000")
    assert (missing.value.reason, missing.value.rpc) == ("WORKFLOW_NOT_FOUND", "GetWorkflow")
    assert missing.value.request_id
    with pytest.raises(InvalidArgument) as empty:
        await mesh.evolution.get_evolution("")
    assert [(v.field, v.description) for v in empty.value.field_violations] == [("run_id", "is required")]
    with pytest.raises(InvalidArgument) as unbuilt:  # refused before anything is sent
        await mesh.workflows.create_workflow({"name": "x", "nodes": [{"node_id": "a"}]})
    assert unbuilt.value.reason == "REQUEST_NOT_BUILT" and "node_id" in unbuilt.value.message
    await register(mesh, "wf_echo")
    with pytest.raises(InvalidArgument) as reused:
        await mesh.registry.register_agent("wf_add", AGENTS["wf_add"], request_id="rid-1")
        await mesh.registry.register_agent("wf_noop", AGENTS["wf_noop"], request_id="rid-1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_a_service_that_is_down_is_unavailable(tmp_path: Path) -> None:
    down = Connection.resolve(environ={}, profiles_file=tmp_path / "none.toml",
                              registry=f"127.0.0.1:{free_port()}", deadline_seconds=3)
    async with Mesh(down) as client:
        with pytest.raises(Unavailable):
            await client.registry.get_agent("anything")


async def test_a_watch_resumes_after_the_connection_drops_with_every_event_once(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    async with inprocess_mesh(common) as ports, tcp_proxy(ports["workflow"]) as (proxy_port, cut):
        async with Mesh(connection(ports, tmp_path)) as direct, Mesh(
            connection({**ports, "workflow": proxy_port}, tmp_path),
            watch_policy=WatchPolicy(backoff_seconds=0.05),
        ) as proxied:
            sleep = await register(direct, "wf_sleep")
            nodes = [{"id": f"n{i}", "agent_id": sleep["agent_id"], "inputs": {"seconds": 0.3, "value": i},
                      **({"depends_on": [f"n{i - 1}"]} if i else {})} for i in range(6)]
            workflow = await direct.workflows.create_workflow({"name": "client-resume", "nodes": nodes})
            execution = await direct.workflows.start_execution(workflow["workflow_id"])

            seen: list[dict[str, Any]] = []
            first_node_done = asyncio.Event()

            async def cut_after_first_node() -> None:
                await first_node_done.wait()
                cut.set()  # every connection through the proxy is reset; new ones are refused
                await asyncio.sleep(0.5)
                cut.clear()

            cutter = asyncio.create_task(cut_after_first_node())
            async for event in proxied.workflows.watch_execution(execution["execution_id"]):
                seen.append(event)
                if event["type"] == "TYPE_NODE_SUCCEEDED":
                    first_node_done.set()
            await cutter

    assert seen[-1]["type"] == "TYPE_EXECUTION_SUCCEEDED"
    assert [e["sequence"] for e in seen] == list(range(1, len(seen) + 1))  # no gap, no repeat
    succeeded = [e for e in seen if e["type"] == "TYPE_NODE_SUCCEEDED"]
    assert len(succeeded) == 6


async def test_a_token_is_sent_on_every_call(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING",
                            auth_tokens=TOKENS, service_token="ops-token-0123456789abcdef")
    async with inprocess_mesh(common) as ports:
        async with Mesh(connection(ports, tmp_path)) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.registry.list_agents()
        async with Mesh(connection(ports, tmp_path, token="ops-token-0123456789abcdef")) as known:
            assert (await known.registry.list_agents()).items == []
            with pytest.raises(NotFound):  # a server stream carries the token too (was UNAUTHENTICATED)
                async for _ in known.workflows.watch_execution("ex_000000000000"):
                    pass
