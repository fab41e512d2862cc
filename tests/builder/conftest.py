"""Builder fixtures: real registry and workflow servers and builder servers on 127.0.0.1:0, the real sandbox."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2
from tdev.builder.v1 import build_pb2
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as wf_service_pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as wf_service_pb2_grpc

from builder_svc.config import BuilderSettings
from builder_svc.sandbox_runner import SandboxRunner
from builder_svc.server import create_server as create_builder
from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.cache import LocalCache
from tdev_common.config import CommonSettings
from tdev_common.llm import DailyBudget, LLMClient, LLMSettings, Price, build_llm
from tdev_common.runtime import ServiceHandle
from tdev_common.secrets import SecretStore
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, require_service
from workflow_svc.config import WorkflowSettings
from workflow_svc.server import create_server as create_workflow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENTS = ROOT / "examples" / "agents"
REQUIREMENTS = ROOT / "examples" / "requirements"
Event = build_pb2.BuildEvent
Stage = build_pb2.Stage
BuildState = build_pb2.Build.State
STAND_IN_KEY = "sk-dummy-builder-stand-in"
STAND_IN_PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)


class NoAnalyzer:
    """The registry's LLM analysis is off in these tests (analysis_workers=0)."""

    async def analyze(self, job: Any, static_metrics: dict[str, Any]) -> Any:
        raise RuntimeError("analysis is off")


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database() -> str:
    """A fresh Postgres database; returns its DSN."""
    name = f"tdev_test_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


async def drop_database(url: str) -> None:
    """Drops a database made by :func:`create_database`."""
    await _admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')


async def offline_llm() -> LLMClient:
    """The offline provider only: no key, no network, no cache shared between tests."""
    settings = LLMSettings(openai_enabled=False, anthropic_enabled=False, daily_budget_usd=None, cache_enabled=False)
    return await build_llm(settings, common=CommonSettings(), secrets=SecretStore(prefix=None), cache=LocalCache(),
                           daily_budget=DailyBudget(None))


async def stand_in_llm(base_url: str) -> LLMClient:
    """The real openai SDK through tdev_common.llm, pointed at a stand-in by base URL, with a dummy key; no fallback
    to the offline provider, no cache, no retries."""
    settings = LLMSettings(
        openai_base_url=base_url, openai_model="test-model", openai_key_required=True, anthropic_enabled=False,
        routes={}, default_route=["openai"], prices={"openai:test-model": STAND_IN_PRICE}, max_attempts=1,
        timeout_seconds=20.0, daily_budget_usd=None, cache_enabled=False)
    return await build_llm(settings, common=CommonSettings(), secrets=SecretStore(prefix=None), cache=LocalCache(),
                           daily_budget=DailyBudget(None))


@dataclass
class Builder:
    """A running builder server and its stub."""

    handle: ServiceHandle
    channel: grpc.aio.Channel
    stub: pb2_grpc.BuilderServiceStub
    database_url: str
    llm: LLMClient | None
    closed: bool = False

    async def close(self) -> None:
        """Stops the server (its builds are released for another server to resume)."""
        if self.closed:
            return
        self.closed = True
        await self.channel.close()
        await self.handle.close(grace=0.5)
        if self.llm is not None:
            await self.llm.close()


@dataclass
class Mesh:
    """Registry and workflow services (SQLite), one shared sandbox for builders, builder databases."""

    tmp_path: Path
    registry: ServiceHandle
    registry_channel: grpc.aio.Channel
    registry_stub: reg_pb2_grpc.RegistryServiceStub
    workflow: ServiceHandle
    workflow_channel: grpc.aio.Channel
    workflow_stub: wf_service_pb2_grpc.WorkflowServiceStub
    tester: SandboxRunner
    databases: list[str] = field(default_factory=list)
    builders: list[Builder] = field(default_factory=list)

    def common(self, **overrides: Any) -> CommonSettings:
        """Common settings pointing at this mesh."""
        values: dict[str, Any] = {
            "data_dir": self.tmp_path / "data", "registry_address": f"127.0.0.1:{self.registry.port}",
            "workflow_address": f"127.0.0.1:{self.workflow.port}", "log_level": "WARNING", "log_json": True,
        }
        values.update(overrides)
        return CommonSettings(**values)

    async def new_database(self) -> str:
        """A fresh Postgres database for a builder, dropped with the mesh."""
        url = await create_database()
        self.databases.append(url)
        return url

    async def start_builder(self, *, database_url: str | None = None, llm: LLMClient | None = None,
                            common: CommonSettings | None = None, **overrides: Any) -> Builder:
        """A builder server on its own port; ``llm`` defaults to the offline provider (closed with the builder;
        a given client stays the caller's)."""
        url = database_url or await self.new_database()
        client = llm or await offline_llm()
        values: dict[str, Any] = {"database_url": url, "claim_interval_seconds": 0.2, "lease_seconds": 5.0,
                                  "watch_poll_seconds": 0.5, "dependency_attempts": 2}
        values.update(overrides)
        handle = await create_builder(BuilderSettings(**values), common or self.common(), port=0, llm=client,
                                      tester=self.tester)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
        owned = None if llm is not None else client
        builder = Builder(handle, channel, pb2_grpc.BuilderServiceStub(channel), url, owned)
        self.builders.append(builder)
        return builder

    async def register(self, name: str, code: str, description: str = "") -> reg_pb2.RegisterAgentResponse:
        """Registers an agent directly with the registry."""
        return await self.registry_stub.RegisterAgent(
            reg_pb2.RegisterAgentRequest(name=name, code=code, description=description))

    async def close(self) -> None:
        """Stops everything started and drops the databases."""
        for builder in self.builders:
            await builder.close()
        await self.tester.close()
        await self.workflow_channel.close()
        await self.workflow.close(grace=0.5)
        await self.registry_channel.close()
        await self.registry.close(grace=0.5)
        for url in self.databases:
            await drop_database(url)


async def start_mesh(tmp_path: Path) -> Mesh:
    """A registry and a workflow service on SQLite files, and the builders' sandbox."""
    require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
    common = CommonSettings(data_dir=tmp_path / "data", log_level="WARNING", log_json=True)
    registry = await create_registry(
        RegistrySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}", analysis_workers=0),
        common, port=0, analyzer=NoAnalyzer())
    registry_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
    workflow = await create_workflow(
        WorkflowSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'workflow.sqlite'}",
                         claim_interval_seconds=0.2, watch_poll_seconds=0.5, report_interval_seconds=0.5),
        CommonSettings(data_dir=tmp_path / "data", log_level="WARNING", registry_address=f"127.0.0.1:{registry.port}"),
        port=0)
    workflow_channel = grpc.aio.insecure_channel(f"127.0.0.1:{workflow.port}")
    tester = await SandboxRunner.start(common)
    return Mesh(tmp_path, registry, registry_channel, reg_pb2_grpc.RegistryServiceStub(registry_channel), workflow,
                workflow_channel, wf_service_pb2_grpc.WorkflowServiceStub(workflow_channel), tester)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    """One registry, one workflow service and one builder sandbox per test module."""
    started = await start_mesh(tmp_path_factory.mktemp("builder-mesh"))
    try:
        yield started
    finally:
        await started.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def builder(mesh: Mesh) -> Builder:
    """One offline builder (Postgres) per test module."""
    return await mesh.start_builder()


# -- helpers ------------------------------------------------------------------------------------------------
def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct from a dict."""
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: struct_pb2.Struct) -> Any:
    """A Struct as JSON with whole numbers as ints."""

    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {k: whole(v) for k, v in item.items()}
        if isinstance(item, list):
            return [whole(v) for v in item]
        return item

    return whole(json_format.MessageToDict(message))


def constraints(**values: Any) -> build_pb2.BuildConstraints:
    """BuildConstraints; ``sample_inputs`` given as dicts."""
    samples = [struct(s) for s in values.pop("sample_inputs", [])]
    return build_pb2.BuildConstraints(sample_inputs=samples, **values)


async def build(stub: pb2_grpc.BuilderServiceStub, requirements: str, **limits: Any) -> list[build_pb2.BuildEvent]:
    """BuildService to the end; returns every event."""
    call = stub.BuildService(pb2.BuildServiceRequest(requirements=requirements, constraints=constraints(**limits)))
    return [response.event async for response in call]


async def watch(stub: pb2_grpc.BuilderServiceStub, build_id: str, after: int = 0) -> list[build_pb2.BuildEvent]:
    """WatchBuild to the end."""
    call = stub.WatchBuild(pb2.WatchBuildRequest(build_id=build_id, after_sequence=after))
    return [response.event async for response in call]


async def get_build(stub: pb2_grpc.BuilderServiceStub, build_id: str) -> build_pb2.Build:
    """GetBuild."""
    return (await stub.GetBuild(pb2.GetBuildRequest(build_id=build_id))).build


async def run_workflow(stub: wf_service_pb2_grpc.WorkflowServiceStub, workflow_id: str,
                       inputs: dict[str, Any]) -> wf_pb2.ExecutionEvent:
    """ExecuteWorkflow to the end; returns the last event."""
    call = stub.ExecuteWorkflow(wf_service_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id, inputs=struct(inputs)))
    events = [response.event async for response in call]
    return events[-1]


def assert_gapless(events: Sequence[build_pb2.BuildEvent], start: int = 1) -> None:
    """Sequences run start, start+1, ... with no gap or duplicate."""
    assert [event.sequence for event in events] == list(range(start, start + len(events)))


def of_type(events: Sequence[build_pb2.BuildEvent], kind: int) -> list[build_pb2.BuildEvent]:
    """Events of one type."""
    return [event for event in events if event.type == kind]


def stage_events(events: Sequence[build_pb2.BuildEvent], kind: int) -> list[tuple[int, int]]:
    """(stage, attempt) of the stage events of one type, in order."""
    return [(event.stage, int(plain(event.details).get("attempt", 0))) for event in events if event.type == kind]


async def labels_once(stub: reg_pb2_grpc.RegistryServiceStub, agent_id: str, version: str,
                      expected: Mapping[str, str], timeout: float = 10.0) -> dict[str, str]:
    """A version's registry labels once it exists and its labels include ``expected`` (a build's versions are
    marked just after it ends); fails with the labels last seen when they do not in time."""
    deadline = time.monotonic() + timeout
    labels: dict[str, str] | None = None
    while True:
        try:
            answer = await stub.GetAgent(reg_pb2.GetAgentRequest(agent_id=agent_id, version=version,
                                                                 exclude_code=True))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # not registered yet
                raise
        else:
            labels = dict(answer.agent.labels)
            if all(labels.get(key) == value for key, value in expected.items()):
                return labels
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent_id}@{version} has labels {labels}, not {dict(expected)}")
        await asyncio.sleep(0.05)
