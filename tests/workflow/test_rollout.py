"""Progressive delivery: workflow nodes run an agent through its "stable" alias, a canary takes its share of
executions, and the registry promotes it or rolls it back from the recorded outcomes (real services in this
process, real sandbox, the typed client)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tdev_client import Connection, InvalidArgument, Mesh, NotFound
from tdev_common.config import CommonSettings
from tests.support.inprocess_mesh import inprocess_mesh
from tests.workflow.conftest import _agent
from workflow_svc.routing import canary_bucket

pytestmark = pytest.mark.mesh

GOOD = _agent("Doubler", 'return {"y": inputs["x"] * 2}')
SAME_BUT_NEW = _agent("Doubler", '# the same behaviour, a new version\nreturn {"y": inputs["x"] + inputs["x"]}')
BROKEN = _agent("Doubler", 'raise ValueError("regression")')
POLICY = {"min_sample": 4, "max_success_rate_drop": 0.05, "max_latency_ratio": 50, "min_latency_increase_ms": 0.5}


@pytest.fixture
async def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mesh]:
    monkeypatch.setenv("TDEV_WORKFLOW_REPORT_INTERVAL_SECONDS", "0.05")
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    async with inprocess_mesh(common) as ports:
        connection = Connection.resolve(environ={}, profiles_file=tmp_path / "none.toml",
                                        **{name: f"127.0.0.1:{port}" for name, port in ports.items()})
        async with Mesh(connection) as client:
            yield client


async def versions(mesh: Mesh, *codes: str) -> list[dict[str, Any]]:
    return [(await mesh.registry.register_agent("doubler", code))["agent"] for code in codes]


async def run_many(mesh: Mesh, workflow_id: str, count: int) -> list[str]:
    """Runs ``count`` executions one after another; the agent version each node ran."""
    used = []
    for x in range(count):
        started = await mesh.workflows.start_execution(workflow_id, {"x": x})
        async for _ in mesh.workflows.watch_execution(started["execution_id"]):
            pass
        execution = await mesh.workflows.get_execution(started["execution_id"])
        used.append(next(n["agent_version"] for n in execution["nodes"] if n["node_id"] == "double"))
    return used


async def until_event(mesh: Mesh, agent_id: str, kind: str) -> dict[str, Any]:
    for _ in range(200):
        events = (await mesh.registry.list_agent_aliases(agent_id))["events"]
        found = [e for e in events if e["kind"] == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} event")


async def stable_workflow(mesh: Mesh, agent_id: str) -> str:
    return (await mesh.workflows.create_workflow({"name": "by-alias", "nodes": [
        {"id": "double", "agent_id": agent_id, "agent_alias": "stable", "inputs": {"x": {"$ref": "inputs.x"}}}]})
    )["workflow_id"]


async def test_a_worse_canary_takes_its_share_then_is_rolled_back(mesh: Mesh) -> None:
    v1, v2 = await versions(mesh, GOOD, BROKEN)
    agent_id = v1["agent_id"]
    await mesh.registry.set_agent_alias(agent_id, "stable", v1["version"])
    workflow_id = await stable_workflow(mesh, agent_id)
    await mesh.registry.set_agent_alias(agent_id, "canary", v2["version"], traffic_fraction=0.5, rollout=POLICY)
    canary = {a["alias"]: a for a in (await mesh.registry.list_agent_aliases(agent_id))["aliases"]}["canary"]
    assert canary["rollout"] == POLICY  # the whole policy is stored as given

    used = await run_many(mesh, workflow_id, 24)
    assert set(used) == {v1["version"], v2["version"]}  # both sides took traffic
    rolled_back = await until_event(mesh, agent_id, "KIND_ROLLED_BACK")
    assert rolled_back["version"] == v2["version"] and "success rate" in rolled_back["message"]
    aliases = {a["alias"]: a["version"] for a in (await mesh.registry.list_agent_aliases(agent_id))["aliases"]}
    assert aliases == {"stable": v1["version"]}
    await asyncio.sleep(1.1)  # the engine's alias cache
    assert set(await run_many(mesh, workflow_id, 6)) == {v1["version"]}


async def test_an_equal_canary_is_promoted_to_stable(mesh: Mesh) -> None:
    v1, v2 = await versions(mesh, GOOD, SAME_BUT_NEW)
    agent_id = v1["agent_id"]
    await mesh.registry.set_agent_alias(agent_id, "stable", v1["version"])
    await mesh.registry.set_agent_alias(agent_id, "canary", v2["version"], traffic_fraction=0.5, rollout=POLICY)
    workflow_id = await stable_workflow(mesh, agent_id)

    used = Counter(await run_many(mesh, workflow_id, 24))
    assert used[v2["version"]] > 0 and used[v1["version"]] > 0
    promoted = await until_event(mesh, agent_id, "KIND_PROMOTED")
    assert promoted["version"] == v2["version"]
    view = await mesh.registry.list_agent_aliases(agent_id)
    assert {a["alias"]: a["version"] for a in view["aliases"]} == {"stable": v2["version"]}
    assert "rollout" not in view
    await asyncio.sleep(1.1)
    assert set(await run_many(mesh, workflow_id, 4)) == {v2["version"]}


def test_the_canary_share_is_a_deterministic_fraction() -> None:
    buckets = [canary_bucket(f"ex_{i:012x}", "agent_0123456789ab") for i in range(4000)]
    assert buckets == [canary_bucket(f"ex_{i:012x}", "agent_0123456789ab") for i in range(4000)]
    assert abs(sum(b < 0.2 for b in buckets) / len(buckets) - 0.2) < 0.03


async def test_bad_aliases_are_refused(mesh: Mesh) -> None:
    (v1,) = await versions(mesh, GOOD)
    agent_id = v1["agent_id"]
    with pytest.raises(InvalidArgument) as no_stable:
        await mesh.registry.set_agent_alias(agent_id, "canary", v1["version"], traffic_fraction=0.2)
    assert no_stable.value.reason == "NO_STABLE_ALIAS"
    with pytest.raises(InvalidArgument) as bad:
        await mesh.registry.set_agent_alias(agent_id, "canary", "", traffic_fraction=1.5,
                                            rollout={"max_success_rate_drop": 2, "min_latency_increase_ms": -1})
    assert [v.field for v in bad.value.field_violations] == [
        "version", "traffic_fraction", "rollout.max_success_rate_drop", "rollout.min_latency_increase_ms"]
    with pytest.raises(NotFound) as unknown_version:
        await mesh.registry.set_agent_alias(agent_id, "stable", "9.9.9")
    assert unknown_version.value.reason == "AGENT_VERSION_NOT_FOUND"
    with pytest.raises(NotFound) as unknown_alias:
        await mesh.registry.delete_agent_alias(agent_id, "stable")
    assert unknown_alias.value.reason == "ALIAS_NOT_FOUND"
    with pytest.raises(InvalidArgument) as node:
        await stable_workflow(mesh, agent_id)
    assert [(v.field, "no alias" in v.description) for v in node.value.field_violations] == [
        ("nodes[0].agent_alias", True)]
    await mesh.registry.set_agent_alias(agent_id, "stable", v1["version"])
    await mesh.registry.delete_agent_alias(agent_id, "stable")
    kinds = [e["kind"] for e in (await mesh.registry.list_agent_aliases(agent_id))["events"]]
    assert kinds == ["KIND_DELETED", "KIND_SET"]
