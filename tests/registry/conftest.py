"""Registry fixtures: a real server on 127.0.0.1:0 over SQLite (in-process cache) or Postgres + Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


@dataclass(frozen=True)
class Stack:
    """Where a registry keeps its state."""

    kind: str
    database_url: str
    redis_url: str | None


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Stack:
    """SQLite with the in-process cache, or a fresh Postgres database with the real Redis."""
    if request.param == "sqlite":
        return Stack("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}", None)
    database = request.getfixturevalue("make_postgres_database")()
    return Stack("postgres", database, request.getfixturevalue("redis_url"))


@dataclass
class Registry:
    """A running registry with a stub; ``start_another`` starts a replica (or a restart) on the same state."""

    stack: Stack
    tmp_path: Path
    handle: ServiceHandle
    channel: grpc.aio.Channel
    stub: pb2_grpc.RegistryServiceStub
    namespace: str
    others: list[Registry] = field(default_factory=list)

    async def close(self) -> None:
        """Closes the channel and the server."""
        await self.channel.close()
        await self.handle.close(grace=1.0)

    async def start_another(self, **overrides: Any) -> Registry:
        """Another server on the same database and cache namespace (a replica, or a restart)."""
        other = await start_registry(self.stack, self.tmp_path, namespace=self.namespace, **overrides)
        self.others.append(other)
        return other


async def start_registry(stack: Stack, tmp_path: Path, *, namespace: str | None = None,
                         **overrides: Any) -> Registry:
    """Starts the real service (real sandbox and LLM layer unless a test passes its own)."""
    namespace = namespace or f"tdev-test:{uuid.uuid4().hex[:10]}:"
    inspector = overrides.pop("inspector", None)
    analyzer = overrides.pop("analyzer", None)
    embedder = overrides.pop("embedder", None)
    values: dict[str, Any] = {"database_url": stack.database_url, "analysis_poll_seconds": 0.2,
                              "cache_namespace": namespace}
    values.update(overrides)
    settings = RegistrySettings(**values)
    common = CommonSettings(data_dir=tmp_path / "data", redis_url=stack.redis_url, log_json=True)
    handle = await create_server(settings, common, port=0, inspector=inspector, analyzer=analyzer,
                                 embedder=embedder)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
    return Registry(stack, tmp_path, handle, channel, pb2_grpc.RegistryServiceStub(channel), namespace)


@pytest.fixture
async def registry(stack: Stack, tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry with analysis on."""
    started = await start_registry(stack, tmp_path)
    try:
        yield started
    finally:
        for other in started.others:
            await other.close()
        await started.close()


def example(name: str) -> str:
    """Source of an example agent."""
    return (EXAMPLES / f"{name}.py").read_text()


def tiny_agent(tag: str, *, description: str = "", body: str = "return {'tag': TAG}") -> str:
    """A small distinct agent; ``tag`` changes the code (and so the code hash)."""
    return (
        f'"""Agent {tag}."""\n\nTAG = {tag!r}\n\n\n'
        f"class Tiny:\n"
        f'    """{description or "A tiny agent."}"""\n\n'
        f"    def get_capabilities(self) -> dict:\n"
        f'        """Capabilities."""\n'
        f'        return {{"name": TAG, "tags": ["tiny"]}}\n\n'
        f"    def execute(self, inputs: dict) -> dict:\n"
        f'        """Runs."""\n'
        f"        {body}\n"
    )


async def register(
    stub: pb2_grpc.RegistryServiceStub, name: str, code: str, **fields: Any
) -> pb2.RegisterAgentResponse:
    """RegisterAgent with keyword fields."""
    parents = [agent_pb2.AgentVersionRef(agent_id=a, version=v) for a, v in fields.pop("parents", [])]
    answer: pb2.RegisterAgentResponse = await stub.RegisterAgent(
        pb2.RegisterAgentRequest(name=name, code=code, parents=parents, **fields))
    return answer


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call fails with (fails the test when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Polls ``check`` until it is true (asynchronous work: analysis, cross-replica invalidation)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def analysed(stub: pb2_grpc.RegistryServiceStub, agent_id: str, version: str = "") -> agent_pb2.Agent:
    """The version once its analysis has finished (succeeded or failed)."""
    done = (agent_pb2.AgentAnalysis.STATE_SUCCEEDED, agent_pb2.AgentAnalysis.STATE_FAILED)
    found: list[agent_pb2.Agent] = []

    async def finished() -> bool:
        answer = await stub.GetAgent(pb2.GetAgentRequest(agent_id=agent_id, version=version, exclude_code=True))
        found[:] = [answer.agent]
        return answer.agent.analysis.state in done

    await eventually(finished)
    return found[0]
