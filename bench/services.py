"""The registry and workflow services as deployed, for the workflow benchmarks: each its own process on a
scratch Postgres database (and Redis when reachable), with the benchmark's no-op agent registered.

Needs Postgres at TDEV_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres); the
scratch databases are created and dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "gen")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import asyncpg  # noqa: E402
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tdev.registry.v1 import registry_service_pb2 as reg_pb2  # noqa: E402
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc  # noqa: E402
from tdev.workflow.v1 import workflow_pb2 as wf_pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2 as pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc  # noqa: E402

ADMIN_URL = os.environ.get("TDEV_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TDEV_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NOOP_AGENT = '''"""No-op agent."""


class Noop:
    """Does nothing."""

    def get_capabilities(self) -> dict:
        return {"name": "noop"}

    def execute(self, inputs: dict) -> dict:
        return {}
'''
# The same no-op, opted in to warm-process reuse (docs/workflow.md, "Warm-process reuse").
NOOP_WARM_AGENT = NOOP_AGENT.replace('return {"name": "noop"}', 'return {"name": "noop", "reuse_warm_process": True}')
Shape = dict[str, list[str]]  # node id -> dependencies


def reachable(host: str, port: int) -> bool:
    """True when something listens there."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mesh:
    """The running services: addresses, the no-op agent's id, and where their logs are."""

    registry: str
    workflow: str
    agent_id: str
    data_dir: Path
    redis: bool
    processes: list[subprocess.Popen[bytes]]
    warm_agent_id: str = ""

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the service processes and all their descendants have used so far: the
        sandbox runtime and the executions it forked and reaped included (from /proc)."""
        total = 0.0
        stack = [process.pid for process in self.processes]
        while stack:
            pid = stack.pop()
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                # utime, stime, and cutime, cstime: the reaped children (live ones are walked below)
                total += sum(int(fields[index]) for index in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")
                for task in Path(f"/proc/{pid}/task").iterdir():
                    stack.extend(int(child) for child in (task / "children").read_text().split())
        return total


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
    full.update(env)
    full["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full, stdout=out,
                                stderr=subprocess.STDOUT)


async def _ready(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                tail = await asyncio.to_thread(log.read_text)
                raise RuntimeError(f"service at {address} exited:\n{tail[-3000:]}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"service at {address} did not start")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def scratch_database(prefix: str = "tdev_bench") -> AsyncIterator[str]:
    """A new empty Postgres database for one run (dropped afterwards); yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def mesh(workflow_env: dict[str, str]) -> AsyncIterator[Mesh]:
    """``python -m registry_svc`` and ``python -m workflow_svc`` on a scratch database, the no-op agent
    registered; both stopped (and the database dropped) on exit. ``workflow_env`` adds TDEV_WORKFLOW_*
    settings."""
    redis_url = REDIS_URL if reachable("127.0.0.1", 6379) else None
    processes: list[subprocess.Popen[bytes]] = []
    async with scratch_database() as database_url:
        with tempfile.TemporaryDirectory() as data:
            base = {"TDEV_DATA_DIR": data, "TDEV_LOG_LEVEL": "WARNING"}
            if redis_url:
                base["TDEV_REDIS_URL"] = redis_url
            registry_port, workflow_port = _free_port(), _free_port()
            try:
                registry_log = Path(data) / "registry.log"
                processes.append(_spawn("registry_svc", {
                    **base, "TDEV_REGISTRY_PORT": str(registry_port), "TDEV_REGISTRY_DATABASE_URL": database_url,
                    "TDEV_REGISTRY_ANALYSIS_WORKERS": "0"}, registry_log))
                await _ready(f"127.0.0.1:{registry_port}", processes[-1], registry_log)
                workflow_log = Path(data) / "workflow.log"
                processes.append(_spawn("workflow_svc", {
                    **base, "TDEV_WORKFLOW_PORT": str(workflow_port), "TDEV_WORKFLOW_DATABASE_URL": database_url,
                    "TDEV_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}", **workflow_env}, workflow_log))
                await _ready(f"127.0.0.1:{workflow_port}", processes[-1], workflow_log)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{registry_port}") as channel:
                    registry = reg_pb2_grpc.RegistryServiceStub(channel)
                    agent = await registry.RegisterAgent(
                        reg_pb2.RegisterAgentRequest(name="bench_noop", code=NOOP_AGENT))
                    warm = await registry.RegisterAgent(
                        reg_pb2.RegisterAgentRequest(name="bench_noop_warm", code=NOOP_WARM_AGENT))
                    assert warm.agent.reuses_warm_process
                yield Mesh(f"127.0.0.1:{registry_port}", f"127.0.0.1:{workflow_port}", agent.agent.agent_id,
                           Path(data), bool(redis_url), processes, warm.agent.agent_id)
            finally:
                for process in reversed(processes):
                    process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(15)
                    if process.poll() is None:
                        process.kill()


async def create_workflow(stub: pb2_grpc.WorkflowServiceStub, name: str, shape: Shape, agent_id: str,
                          concurrency: int) -> str:
    """Registers a DAG of no-op nodes; its workflow id."""
    definition = json_format.ParseDict(
        {"name": name, "max_concurrency": concurrency,
         "nodes": [{"id": node_id, "agent_id": agent_id, "depends_on": deps} for node_id, deps in shape.items()]},
        wf_pb2.Workflow(),
    )
    created = await stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=definition))
    return str(created.workflow.workflow_id)


async def execute(stub: pb2_grpc.WorkflowServiceStub, workflow_id: str,
                  event_types: Sequence[int] = (), *, batch_events: bool = False) -> list[wf_pb2.ExecutionEvent]:
    """ExecuteWorkflow to its last event, which must be EXECUTION_SUCCEEDED; every event streamed (only
    those of ``event_types`` and the last one, when given), one per message or, with ``batch_events``, every
    event ready at once in one message."""
    call = stub.ExecuteWorkflow(pb2.ExecuteWorkflowRequest(workflow_id=workflow_id, event_types=event_types,  # type: ignore[arg-type]
                                                           batch_events=batch_events))
    if batch_events:
        events = [event async for answer in call for event in answer.events]
    else:
        events = [answer.event async for answer in call]
    if events[-1].type != wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED:
        raise RuntimeError(f"execution did not succeed: {events[-1]}")
    return events
