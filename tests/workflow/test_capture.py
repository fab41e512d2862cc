"""Production cases: a workflow that opts in sends what its agents received and answered to the registry, where
cases are listed, labelled and deleted (real services in this process, real sandbox, the typed client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tdev_client import Connection, InvalidArgument, Mesh, NotFound
from tdev_common.config import CommonSettings
from tests.support.inprocess_mesh import inprocess_mesh
from tests.workflow.conftest import _agent

pytestmark = pytest.mark.mesh

DOUBLER = _agent("Doubler", 'if inputs["x"] < 0:\n    raise ValueError(f"negative x: {inputs[\'x\']}")\n'
                            'return {"y": inputs["x"] * 2, "email": inputs.get("email", "")}')
CAPTURE = {"enabled": True, "success_sample_rate": 1.0, "redact_keys": ["email"]}


@pytest.fixture
async def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mesh]:
    monkeypatch.setenv("TDEV_REGISTRY_MAX_CASES_PER_VERSION", "6")
    monkeypatch.setenv("TDEV_WORKFLOW_REPORT_INTERVAL_SECONDS", "0.05")
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    async with inprocess_mesh(common) as ports:
        connection = Connection.resolve(environ={}, profiles_file=tmp_path / "none.toml",
                                        **{name: f"127.0.0.1:{port}" for name, port in ports.items()})
        async with Mesh(connection) as client:
            yield client


async def workflow(mesh: Mesh, agent_id: str, capture: dict[str, Any] | None) -> str:
    definition: dict[str, Any] = {"name": "capture", "nodes": [
        {"id": "double", "agent_id": agent_id, "inputs": {"x": {"$ref": "inputs.x"},
                                                          "email": {"$ref": "inputs.email"}}}]}
    if capture is not None:
        definition["capture"] = capture
    return (await mesh.workflows.create_workflow(definition))["workflow_id"]


async def run(mesh: Mesh, workflow_id: str, x: int, email: str = "nobody@example.com") -> str:
    events = [e async for e in mesh.workflows.execute_workflow(workflow_id, {"x": x, "email": email})]
    return events[-1]["type"]


async def recorded(mesh: Mesh, agent_id: str, count: int) -> None:
    """Waits until the registry has counted ``count`` executions of the agent (the outbox has drained)."""
    for _ in range(200):
        if (await mesh.registry.get_agent(agent_id, exclude_code=True))["metrics"]["execution_count"] >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the registry never saw {count} executions")


async def test_failures_and_sampled_successes_become_cases_redacted(mesh: Mesh) -> None:
    agent = (await mesh.registry.register_agent("doubler", DOUBLER))["agent"]
    workflow_id = await workflow(mesh, agent["agent_id"], CAPTURE)
    assert await run(mesh, workflow_id, 3, "ann@example.com") == "TYPE_EXECUTION_SUCCEEDED"
    assert await run(mesh, workflow_id, -2) == "TYPE_EXECUTION_FAILED"
    await recorded(mesh, agent["agent_id"], 2)

    cases = [c async for c in mesh.registry.iter_agent_cases(agent["agent_id"])]
    assert len(cases) == 2
    failing = (await mesh.registry.list_agent_cases(agent["agent_id"], filter="FILTER_FAILING")).items
    assert [(c["inputs"]["x"], c["error_type"], c["success"]) for c in failing] == [(-2, "ValueError", False)]
    assert "negative x: -2" in failing[0]["error_message"] and "output" not in failing[0]
    succeeding = (await mesh.registry.list_agent_cases(agent["agent_id"], filter="FILTER_SUCCEEDING")).items
    assert succeeding[0]["output"] == {"y": 6, "email": "**redacted**"}
    assert succeeding[0]["inputs"] == {"x": 3, "email": "**redacted**"}
    assert workflow_id in succeeding[0]["source"] and succeeding[0]["version"] == agent["version"]

    labelled = await mesh.registry.label_agent_case(failing[0]["case_id"], {"y": -4, "email": ""})
    assert (labelled["labelled"], labelled["expected"]) == (True, {"y": -4, "email": ""}) and labelled["label_time"]
    assert [c["case_id"] for c in (await mesh.registry.list_agent_cases(
        agent["agent_id"], filter="FILTER_LABELLED")).items] == [failing[0]["case_id"]]
    assert [c["case_id"] for c in (await mesh.registry.list_agent_cases(
        agent["agent_id"], filter="FILTER_UNLABELLED")).items] == [succeeding[0]["case_id"]]

    await mesh.registry.delete_agent_case(succeeding[0]["case_id"])
    with pytest.raises(NotFound) as gone:
        await mesh.registry.delete_agent_case(succeeding[0]["case_id"])
    assert gone.value.reason == "CASE_NOT_FOUND"
    assert [c["case_id"] async for c in mesh.registry.iter_agent_cases(agent["agent_id"])] == [
        failing[0]["case_id"]]


async def test_nothing_is_captured_unless_the_workflow_opted_in(mesh: Mesh) -> None:
    agent = (await mesh.registry.register_agent("doubler", DOUBLER))["agent"]
    for capture in (None, {"enabled": False, "success_sample_rate": 1.0}):
        workflow_id = await workflow(mesh, agent["agent_id"], capture)
        await run(mesh, workflow_id, 1)
        await run(mesh, workflow_id, -1)
    await recorded(mesh, agent["agent_id"], 4)
    assert (await mesh.registry.list_agent_cases(agent["agent_id"])).items == []
    failures_only = await workflow(mesh, agent["agent_id"], {"enabled": True})
    await run(mesh, failures_only, 5)
    await run(mesh, failures_only, -5)
    await recorded(mesh, agent["agent_id"], 6)
    assert [c["inputs"]["x"] for c in (await mesh.registry.list_agent_cases(agent["agent_id"])).items] == [-5]


async def test_retention_keeps_the_newest_and_labelled_cases_and_size_caps_apply(mesh: Mesh) -> None:
    agent = (await mesh.registry.register_agent("doubler", DOUBLER))["agent"]
    workflow_id = await workflow(mesh, agent["agent_id"], CAPTURE)
    await run(mesh, workflow_id, -100)
    await recorded(mesh, agent["agent_id"], 1)
    oldest = (await mesh.registry.list_agent_cases(agent["agent_id"])).items[0]
    await mesh.registry.label_agent_case(oldest["case_id"], {"y": -200, "email": ""})
    for x in range(1, 9):
        await run(mesh, workflow_id, x)
    await recorded(mesh, agent["agent_id"], 9)
    kept = [c async for c in mesh.registry.iter_agent_cases(agent["agent_id"])]
    assert len(kept) == 6  # TDEV_REGISTRY_MAX_CASES_PER_VERSION
    assert oldest["case_id"] in {c["case_id"] for c in kept}  # the labelled one outlives newer unlabelled ones
    assert sorted(c["inputs"]["x"] for c in kept if c["success"]) == [4, 5, 6, 7, 8]

    small = await workflow(mesh, agent["agent_id"], {**CAPTURE, "max_case_bytes": 200})
    await run(mesh, small, 1, "x" * 500)
    await recorded(mesh, agent["agent_id"], 10)
    assert len([c async for c in mesh.registry.iter_agent_cases(agent["agent_id"])]) == 6  # not captured


async def test_bad_capture_policies_and_labels_are_refused_with_every_field(mesh: Mesh) -> None:
    agent = (await mesh.registry.register_agent("doubler", DOUBLER))["agent"]
    with pytest.raises(InvalidArgument) as bad:
        await workflow(mesh, agent["agent_id"], {"enabled": True, "success_sample_rate": 1.5,
                                                 "max_case_bytes": -1, "redact_keys": [" "]})
    assert [v.field for v in bad.value.field_violations] == [
        "capture.success_sample_rate", "capture.max_case_bytes", "capture.redact_keys[0]"]
    with pytest.raises(NotFound) as unknown:
        await mesh.registry.label_agent_case("case_000000000000", {"y": 1})
    assert unknown.value.reason == "CASE_NOT_FOUND"
    with pytest.raises(NotFound) as no_agent:
        await mesh.registry.list_agent_cases("agent_000000000000")
    assert no_agent.value.reason == "AGENT_NOT_FOUND"
    with pytest.raises(InvalidArgument) as missing:
        await mesh.registry.list_agent_cases("")
    assert [v.field for v in missing.value.field_violations] == ["agent_id"]
