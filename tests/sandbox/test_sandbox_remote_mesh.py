"""The sandbox tier under real services: registry and workflow (SQLite, in-process) on real workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from remote_helpers import WorkerProcess, free_port, start_worker, wait_serving
from sandbox_helpers import wait_for
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc
from tdev.workflow.v1 import workflow_service_pb2_grpc as wf_pb2_grpc

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle
from tests.workflow.conftest import AGENTS, Event, _NoAnalyzer, create, definition, execute, node, of_type
from workflow_svc.config import WorkflowSettings
from workflow_svc.server import create_server as create_workflows

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio]


@dataclass
class Services:
    registry: ServiceHandle
    registry_stub: reg_pb2_grpc.RegistryServiceStub
    channels: list[grpc.aio.Channel]
    handles: list[ServiceHandle]

    async def workflows(self, common: CommonSettings) -> wf_pb2_grpc.WorkflowServiceStub:
        handle = await create_workflows(
            WorkflowSettings(claim_interval_seconds=0.2), common.model_copy(
                update={"registry_address": f"127.0.0.1:{self.registry.port}"}), port=0)
        self.handles.append(handle)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
        self.channels.append(channel)
        return wf_pb2_grpc.WorkflowServiceStub(channel)

    async def register(self, name: str) -> str:
        answer = await self.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name=name, code=AGENTS[name]))
        return str(answer.agent.agent_id)


def use_tier(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Services read their sandbox settings at start-up: the next one started uses these workers."""
    monkeypatch.setenv("TDEV_SANDBOX_REMOTE_ADDRESSES", ",".join(addresses))


@pytest.fixture
def common(tmp_path: Path) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")


@pytest.fixture
async def services(common: CommonSettings) -> AsyncIterator[list[Services]]:
    started: list[Services] = []
    yield started
    for item in started:
        for channel in item.channels:
            await channel.close()
        for handle in reversed(item.handles):
            await handle.close(grace=0)


async def start_services(common: CommonSettings, started: list[Services]) -> Services:
    registry = await create_registry(RegistrySettings(analysis_workers=0), common, port=0, analyzer=_NoAnalyzer())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
    item = Services(registry, reg_pb2_grpc.RegistryServiceStub(channel), [channel], [registry])
    started.append(item)
    return item


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    made: list[WorkerProcess] = []
    yield made
    for worker in made:
        if worker.process.poll() is None:
            worker.terminate()


async def worker_running_a_long_job(workers: list[WorkerProcess], timeout: float = 15.0) -> WorkerProcess:
    """The worker whose job has lived 0.3 s: the registration's inspection job on the other worker may still be
    exiting when the node starts, and killing that worker would test nothing."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen: dict[int, WorkerProcess] = {}
    while asyncio.get_running_loop().time() < deadline:
        now = {p.pid: w for w in workers for p in w.job_processes()}
        lasting = [w for pid, w in now.items() if pid in seen]
        if lasting:
            return lasting[0]
        seen = now
        await asyncio.sleep(0.3)
    raise AssertionError("no worker ran a job for 0.3 s")


async def test_kill_9_of_a_worker_mid_node_is_retried_on_another_worker(
    monkeypatch: pytest.MonkeyPatch, common: CommonSettings, services: list[Services], workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    workers += [start_worker(tmp_path, 0), start_worker(tmp_path, 1)]
    await asyncio.gather(*(wait_serving(w) for w in workers))
    use_tier(monkeypatch, *(w.address for w in workers))
    mesh = await start_services(common, services)
    agent = await mesh.register("wf_sleep")
    stub = await mesh.workflows(common)
    workflow = await create(stub, definition("remote-retry", [
        node("nap", agent, {"seconds": 1.5, "value": 7}, timeout_seconds=30,
             retry_policy={"max_retries": 2, "initial_backoff": 0.05})]))

    running = asyncio.create_task(execute(stub, workflow.workflow_id))
    victim = await worker_running_a_long_job(workers)
    victim.kill()
    events = await asyncio.wait_for(running, 30.0)

    retries = of_type(events, Event.TYPE_NODE_RETRYING)
    assert [(e.error.type, e.attempt) for e in retries] == [("killed", 1)]
    assert "was lost during the job" in retries[0].error.message
    succeeded = of_type(events, Event.TYPE_NODE_SUCCEEDED)
    assert [e.attempt for e in succeeded] == [2]
    assert of_type(events, Event.TYPE_EXECUTION_SUCCEEDED)
    assert await wait_for(lambda: not victim.processes(), timeout=3.0), victim.processes()


async def test_registering_an_agent_with_the_tier_down_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, common: CommonSettings, services: list[Services]
) -> None:
    use_tier(monkeypatch, f"127.0.0.1:{free_port()}")
    mesh = await start_services(common, services)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.register("wf_echo")

    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "sandbox is unavailable" in (raised.value.details() or "")


async def test_a_node_with_the_tier_down_fails_as_sandbox_unavailable_and_is_retried(
    monkeypatch: pytest.MonkeyPatch, common: CommonSettings, services: list[Services], workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    workers.append(start_worker(tmp_path, 2))
    await wait_serving(workers[0])
    use_tier(monkeypatch, workers[0].address)
    mesh = await start_services(common, services)  # the registry inspects on a live tier
    agent = await mesh.register("wf_echo")
    use_tier(monkeypatch, f"127.0.0.1:{free_port()}")
    stub = await mesh.workflows(common)  # the workflow service's tier is down
    workflow = await create(stub, definition("remote-down", [
        node("echo", agent, {"value": 1}, retry_policy={"max_retries": 1, "initial_backoff": 0.05})]))

    events = await asyncio.wait_for(execute(stub, workflow.workflow_id), 30.0)

    assert [e.error.type for e in of_type(events, Event.TYPE_NODE_RETRYING)] == ["sandbox_unavailable"]
    failed = of_type(events, Event.TYPE_NODE_FAILED)
    assert [(e.error.type, e.attempt) for e in failed] == [("sandbox_unavailable", 2)]
    assert of_type(events, Event.TYPE_EXECUTION_FAILED)


WARM_COUNTER = '''
import os

TOKEN = os.urandom(8).hex()


class WarmCounter:
    """Counts its calls; opted in to warm-process reuse."""

    def __init__(self) -> None:
        self.calls = 0

    def get_capabilities(self) -> dict:
        return {"name": "warm_counter", "reuse_warm_process": True}

    def execute(self, inputs: dict) -> dict:
        self.calls += 1
        return {"token": TOKEN, "calls": self.calls}
'''


async def test_a_chain_of_an_opted_in_agent_runs_in_one_warm_process_on_the_tier(
    monkeypatch: pytest.MonkeyPatch, common: CommonSettings, services: list[Services], workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    patient = {"TDEV_SANDBOX_SESSION_IDLE_SECONDS": "1.0"}  # reuse must not depend on the machine's load
    workers += [start_worker(tmp_path, 0, extra_env=patient), start_worker(tmp_path, 1, extra_env=patient)]
    await asyncio.gather(*(wait_serving(w) for w in workers))
    use_tier(monkeypatch, *(w.address for w in workers))
    mesh = await start_services(common, services)
    registered = await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name="warm_counter",
                                                                                    code=WARM_COUNTER))
    assert registered.agent.reuses_warm_process
    stub = await mesh.workflows(common)
    agent = registered.agent.agent_id
    workflow = await create(stub, definition("remote-warm-chain", [
        node(f"c{i}", agent, {}, [f"c{i - 1}"] if i else []) for i in range(4)]))

    events = await execute(stub, workflow.workflow_id)

    outputs = [dict(e.output) for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)]
    assert len({o["token"] for o in outputs}) == 1
    assert [o["calls"] for o in outputs] == [1, 2, 3, 4]
