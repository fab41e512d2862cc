"""Workflow fixtures: one real registry (Postgres + Redis + sandbox) per module, real workflow servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, REDIS_URL, require_service
from workflow_svc.config import WorkflowSettings
from workflow_svc.server import create_server as create_workflow_server

ROOT = Path(__file__).resolve().parents[2]
Event = wf_pb2.ExecutionEvent
State = wf_pb2.Execution.State
NodeState = wf_pb2.NodeRun.State


def _agent(class_name: str, body: str, imports: str = "") -> str:
    return (
        f'"""Test agent {class_name}."""\n{imports}\n\n'
        f"class {class_name}:\n"
        f'    """Test agent."""\n\n'
        f"    def get_capabilities(self) -> dict:\n"
        f'        return {{"name": "{class_name}"}}\n\n'
        f"    def execute(self, inputs: dict) -> dict:\n"
        + "".join(f"        {line}\n" for line in body.strip().splitlines())
    )


AGENTS = {
    "wf_noop": _agent("Noop", "return {}"),
    "wf_echo": _agent("Echo", 'return {"value": inputs.get("value")}'),
    "wf_add": _agent("Add", 'return {"value": sum(inputs["values"])}'),
    "wf_sleep": _agent(
        "Sleep", 'time.sleep(inputs.get("seconds", 0))\nreturn {"value": inputs.get("value")}', "import time"
    ),
    "wf_flaky": _agent(
        "Flaky",
        'if inputs["attempt"] <= inputs["fail_times"]:\n'
        '    raise RuntimeError(f"flaky failure on attempt {inputs[\'attempt\']}")\n'
        'return {"attempt": inputs["attempt"]}',
    ),
    "wf_fail": _agent("Fail", 'raise ValueError("boom: " + str(inputs.get("why", "always")))'),
    "wf_big": _agent("Big", 'return {"data": "x" * inputs["size"]}'),
    "wf_nan": _agent("Nan", 'return {"value": {"nested": [1.0, float(inputs.get("value", "nan"))]}}'),
    # Writes a well-framed success holding NaN on the sandbox's result pipe itself and exits at once.
    "wf_forged_nan": _agent(
        "ForgedNan",
        "header = b'{\"t\":\"result\",\"i\":0}'\n"
        "payload = b'{\"kind\":\"ok\",\"output\":{\"value\":{\"nested\":[NaN]}}}'\n"
        "frame = struct.pack('<II', len(header), len(payload)) + header + payload\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, frame)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)",
        "import os\nimport struct",
    ),
}


class _NoAnalyzer:
    """The registry's analysis is off in these tests (analysis_workers=0)."""

    async def analyze(self, job: Any, static_metrics: dict[str, Any]) -> Any:
        raise RuntimeError("analysis is off")


async def create_database() -> str:
    """A fresh Postgres database; returns its DSN."""
    name = f"tdev_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


async def drop_database(url: str) -> None:
    """Drops a database made by :func:`create_database`."""
    name = url.rsplit("/", 1)[-1]
    connection = await asyncpg.connect(f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@dataclass
class Workflows:
    """A running workflow service (in-process or a subprocess) and its stub."""

    address: str
    channel: grpc.aio.Channel
    stub: pb2_grpc.WorkflowServiceStub
    handle: ServiceHandle | None = None
    process: subprocess.Popen[bytes] | None = None

    async def close(self) -> None:
        """Stops the service gracefully."""
        await self.channel.close()
        if self.handle is not None:
            await self.handle.close(grace=1.0)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)

    def kill(self) -> None:
        """kill -9 of a subprocess service."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@dataclass
class Mesh:
    """A module's shared registry and databases."""

    tmp_path: Path
    registry: ServiceHandle
    registry_stub: reg_pb2_grpc.RegistryServiceStub
    registry_channel: grpc.aio.Channel
    database_url: str
    agents: dict[str, str] = field(default_factory=dict)
    started: list[Workflows] = field(default_factory=list)
    extra_databases: list[str] = field(default_factory=list)
    redis_channel: str = field(default_factory=lambda: f"tdev:test:{uuid.uuid4().hex[:8]}")

    @property
    def registry_address(self) -> str:
        """Where the registry listens."""
        return f"127.0.0.1:{self.registry.port}"

    def common(self, redis: bool = True) -> CommonSettings:
        """Common settings pointing at this mesh."""
        return CommonSettings(
            data_dir=self.tmp_path / "data",
            redis_url=REDIS_URL if redis else None,
            registry_address=self.registry_address,
            log_json=True,
            log_level="WARNING",
        )

    async def start_workflows(self, database_url: str | None = None, **overrides: Any) -> Workflows:
        """An in-process workflow server on its own port."""
        values: dict[str, Any] = {
            "database_url": database_url or self.database_url,
            "redis_channel": self.redis_channel,
            "lease_seconds": 3.0,
            "claim_interval_seconds": 0.3,
            "watch_poll_seconds": 1.0,
        }
        values.update(overrides)
        redis = values.pop("redis", True)
        handle = await create_workflow_server(WorkflowSettings(**values), self.common(redis), port=0)
        address = f"127.0.0.1:{handle.port}"
        channel = grpc.aio.insecure_channel(address)
        started = Workflows(address, channel, pb2_grpc.WorkflowServiceStub(channel), handle=handle)
        self.started.append(started)
        return started

    def spawn_workflows(self, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """``python -m workflow_svc`` configured through the environment."""
        full = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
        full.update(
            {
                "TDEV_WORKFLOW_PORT": str(port),
                "TDEV_WORKFLOW_DATABASE_URL": self.database_url,
                "TDEV_REDIS_URL": REDIS_URL,
                "TDEV_WORKFLOW_REDIS_CHANNEL": self.redis_channel,
                "TDEV_REGISTRY_ADDRESS": self.registry_address,
                "TDEV_DATA_DIR": str(self.tmp_path / "data"),
                "TDEV_LOG_LEVEL": "INFO",
                "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
            }
        )
        full.update(env)
        log = (self.tmp_path / f"workflow-{port}-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "workflow_svc"], cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT
        )

    async def close(self) -> None:
        """Stops everything started."""
        for started in self.started:
            await started.close()
        await self.registry_channel.close()
        await self.registry.close(grace=1.0)


async def start_mesh(tmp_path: Path) -> Mesh:
    """Postgres databases, a real registry with the test agents registered."""
    require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
    require_service("Redis", "127.0.0.1", 6379)
    registry_db = await create_database()
    workflow_db = await create_database()
    settings = RegistrySettings(
        database_url=registry_db, analysis_workers=0, cache_namespace=f"tdev-test:{uuid.uuid4().hex[:8]}:"
    )
    common = CommonSettings(data_dir=tmp_path / "data", redis_url=REDIS_URL, log_json=True, log_level="WARNING")
    registry = await create_registry(settings, common, port=0, analyzer=_NoAnalyzer())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
    mesh = Mesh(tmp_path, registry, reg_pb2_grpc.RegistryServiceStub(channel), channel, workflow_db)
    mesh.extra_databases.append(registry_db)
    answers = await asyncio.gather(
        *(mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name=name, code=code))
          for name, code in AGENTS.items())
    )
    mesh.agents = {answer.agent.name: answer.agent.agent_id for answer in answers}
    return mesh


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    """One registry (and one workflow database) per test module."""
    started = await start_mesh(tmp_path_factory.mktemp("mesh"))
    try:
        yield started
    finally:
        await started.close()
        await drop_database(started.database_url)
        for url in started.extra_databases:
            await drop_database(url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workflows(mesh: Mesh) -> Workflows:
    """One in-process workflow service per module, on Postgres and Redis."""
    return await mesh.start_workflows()


# -- helpers ------------------------------------------------------------------------------------------------
def node(node_id: str, agent: str, inputs: dict[str, Any] | None = None, depends_on: Sequence[str] = (),
         **extra: Any) -> dict[str, Any]:
    """One node in the JSON shape of a definition file."""
    value: dict[str, Any] = {"id": node_id, "agent_id": agent, "depends_on": list(depends_on)}
    if inputs is not None:
        value["inputs"] = inputs
    value.update(extra)
    return value


def definition(name: str, nodes: list[dict[str, Any]], **extra: Any) -> wf_pb2.Workflow:
    """A definition from the JSON shape (protobuf's JSON mapping)."""
    return json_format.ParseDict({"name": name, "nodes": nodes, **extra}, wf_pb2.Workflow())


async def create(stub: pb2_grpc.WorkflowServiceStub, workflow: wf_pb2.Workflow) -> wf_pb2.Workflow:
    """CreateWorkflow; returns the stored workflow."""
    answer = await stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=workflow))
    return answer.workflow


def struct(value: dict[str, Any]) -> Any:
    """A Struct from a dict."""
    from google.protobuf import struct_pb2

    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: Any) -> Any:
    """A Struct as a dict with whole numbers as ints."""
    from workflow_svc.convert import struct_to_dict

    return struct_to_dict(message)


async def execute(stub: pb2_grpc.WorkflowServiceStub, workflow_id: str, inputs: dict[str, Any] | None = None,
                  **fields: Any) -> list[wf_pb2.ExecutionEvent]:
    """ExecuteWorkflow to the end; returns every event."""
    call = stub.ExecuteWorkflow(
        pb2.ExecuteWorkflowRequest(workflow_id=workflow_id, inputs=struct(inputs or {}), **fields)
    )
    return [answer.event async for answer in call]


async def watch(stub: pb2_grpc.WorkflowServiceStub, execution_id: str, after: int = 0) -> list[wf_pb2.ExecutionEvent]:
    """WatchExecution to the end."""
    call = stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id, after_sequence=after))
    return [answer.event async for answer in call]


def assert_gapless(events: Sequence[wf_pb2.ExecutionEvent], start: int = 1) -> None:
    """Sequences run start, start+1, ... with no gap or duplicate."""
    assert [event.sequence for event in events] == list(range(start, start + len(events)))


def of_type(events: Sequence[wf_pb2.ExecutionEvent], kind: int) -> list[wf_pb2.ExecutionEvent]:
    """Events of one type."""
    return [event for event in events if event.type == kind]


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call fails with."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def job_processes_under(pid: int) -> list[int]:
    """Sandbox job processes ("tdev-job") descending from ``pid``."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            names[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(child: int) -> bool:
        seen = 0
        while child in parents and seen < 64:
            child = parents[child]
            if child == pid:
                return True
            seen += 1
        return False

    return [p for p, name in names.items() if name == "tdev-job" and descends(p)]


async def has_job_processes() -> bool:
    """Whether a sandbox job process runs under this test process (for ``eventually``)."""
    return bool(job_processes_under(os.getpid()))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, step: float = 0.05) -> None:
    """Polls until ``check`` is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
