"""The policy loop across crashes: kill -9 of ``python -m evolution_svc`` while its automatic run evolves, and a
run started but never recorded on the policy (a crash between the two writes): neither loses the run or
starts a second one."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_client import Connection, Mesh
from tdev_common.config import CommonSettings
from tests.evolution.test_grpc_resume import spawn
from tests.evolution.test_policy_loop import BUGGY, captured, mesh, policy, production, run, until
from tests.support.ports import free_port
from workflow_svc.config import WorkflowSettings
from workflow_svc.server import create_server as create_workflow

pytestmark = pytest.mark.mesh
__all__ = ["mesh"]  # the in-process mesh fixture, for the adoption test

LONG_SEARCH = {"population_size": 8, "generations": 40, "islands": 1, "seed": 5, "plateau_generations": 0,
               "operators": "OPERATOR_SET_PROGRAM_TRANSFORM"}


@pytest.fixture
async def split_mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Mesh, dict[str, str]]]:
    """Registry and workflow in this process; evolution as a child process the test can kill."""
    monkeypatch.setenv("TDEV_WORKFLOW_REPORT_INTERVAL_SECONDS", "0.05")
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    registry = await create_registry(
        RegistrySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}"), common, port=0)
    known = common.model_copy(update={"registry_address": f"127.0.0.1:{registry.port}"})
    workflow = await create_workflow(WorkflowSettings(), known, port=0)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
    env.update({
        "TDEV_DATA_DIR": str(tmp_path / "data"), "TDEV_LOG_LEVEL": "WARNING",
        "TDEV_REGISTRY_ADDRESS": f"127.0.0.1:{registry.port}", "TDEV_EVOLUTION_PORT": str(port),
        "TDEV_EVOLUTION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'evolution.sqlite'}",
        "TDEV_EVOLUTION_LEASE_SECONDS": "1.5", "TDEV_EVOLUTION_CLAIM_INTERVAL_SECONDS": "0.2",
        "TDEV_EVOLUTION_POLICY_INTERVAL_SECONDS": "0.2", "TDEV_EVOLUTION_POLICY_LEASE_SECONDS": "1.5",
        "TDEV_EVOLUTION_CACHE_NAMESPACE": f"tdev-test:{uuid.uuid4().hex[:10]}:",
        "TDEV_EVOLUTION_CACHE_SIGNING_KEY": "test-signing-key",
    })
    connection = Connection.resolve(environ={}, profiles_file=tmp_path / "none.toml",
                                    registry=f"127.0.0.1:{registry.port}", workflow=f"127.0.0.1:{workflow.port}",
                                    evolution=f"127.0.0.1:{port}")
    try:
        async with Mesh(connection) as client:
            yield client, env
    finally:
        await workflow.close(grace=0)
        await registry.close(grace=0)


async def test_kill_9_of_the_evolution_service_mid_loop_resumes_without_a_second_run(
        split_mesh: tuple[Mesh, dict[str, str]]) -> None:
    mesh, env = split_mesh
    process = await spawn(env)
    try:
        agent_id, _, workflow_id = await production(mesh, BUGGY)
        await run(mesh, workflow_id, [*range(8), 11, 12, 13])
        await captured(mesh, agent_id, 11)
        await mesh.evolution.set_evolution_policy(policy(agent_id, config=LONG_SEARCH))
        evolving = await until(lambda: mesh.evolution.get_evolution_policy(agent_id),
                               lambda p: p["status"]["phase"] == "PHASE_EVOLVING", 30)
        run_id = evolving["status"]["active_run_id"]
        await until(lambda: mesh.evolution.get_evolution(run_id, exclude_code=True),
                    lambda r: len(r.get("generations", [])) >= 1, 30)
        process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL

        process = await spawn(env)
        final = await until(lambda: mesh.evolution.get_evolution_policy(agent_id),
                            lambda p: p["status"]["phase"] in ("PHASE_ROLLING_OUT", "PHASE_WATCHING"), 120)
        runs = [r async for r in mesh.evolution.iter_evolutions(agent_id=agent_id)]
        assert [r["run_id"] for r in runs] == [run_id]  # resumed, not started again
        resumed = await mesh.evolution.get_evolution(run_id, exclude_code=True)
        assert resumed["state"] == "STATE_SUCCEEDED" and resumed["automatic"]
        assert final["status"]["runs_started"] == 1
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def test_a_run_started_but_not_recorded_on_the_policy_is_adopted_not_repeated(mesh: Mesh) -> None:
    agent_id, _, workflow_id = await production(mesh, BUGGY)
    await run(mesh, workflow_id, [*range(8), 11, 12, 13])
    await captured(mesh, agent_id, 11)
    # What a replica that crashed right after starting the policy's first run leaves behind: the run with the
    # policy's idempotency key, and a policy whose status knows nothing of it.
    suite: dict[str, Any] = {"cases": [{"inputs": {"x": 1}, "expected": {"y": 2}}]}
    small = {"population_size": 6, "islands": 1, "generations": 1}
    orphan = await mesh.evolution.start_evolution(agent_id, suite, config=small, request_id=f"policy:{agent_id}:1")
    await mesh.evolution.set_evolution_policy(policy(agent_id))
    ended = await until(lambda: mesh.evolution.get_evolution_policy(agent_id),
                        lambda p: orphan["run_id"] in p["status"]["last_outcome"], 60)
    assert ended["status"]["runs_started"] == 1
    assert [r["run_id"] async for r in mesh.evolution.iter_evolutions(agent_id=agent_id)] == [orphan["run_id"]]
