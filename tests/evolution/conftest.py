"""Evolution fixtures: the real sandbox, example tasks, and a mesh of the real registry and evolution
services on 127.0.0.1:0 (SQLite by default, Postgres + Redis where a test asks for it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc

from evolution_svc.config import EvolutionSettings
from evolution_svc.domain import EvaluationSuite
from evolution_svc.sandbox_runner import SandboxRunner
from evolution_svc.server import create_server
from evolution_svc.validation import suite_from_json, validate_suite
from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle
from tdev_common.sandbox import Limits, Sandbox, SandboxSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "evolution"
TASKS = ("shipping_cost", "slugify", "dispatcher")


def example_code(task: str, name: str = "agent.py") -> str:
    """Source of an example task's starting agent (or its reference)."""
    return (EXAMPLES / task / name).read_text()


def example_suite_json(task: str) -> dict[str, Any]:
    """An example task's suite file."""
    return json.loads((EXAMPLES / task / "suite.json").read_text())  # type: ignore[no-any-return]


def example_suite(task: str) -> EvaluationSuite:
    """An example task's suite as a domain value."""
    return validate_suite(suite_from_json(example_suite_json(task)))


def suite_message(data: dict[str, Any]) -> evolution_pb2.EvaluationSuite:
    """A suite file as the proto message."""
    modes = {
        "exact": evolution_pb2.SCORING_MODE_EXACT,
        "numeric_tolerance": evolution_pb2.SCORING_MODE_NUMERIC_TOLERANCE,
        "json_subset": evolution_pb2.SCORING_MODE_JSON_SUBSET,
        "scorer_agent": evolution_pb2.SCORING_MODE_SCORER_AGENT,
    }
    message = evolution_pb2.EvaluationSuite(
        scoring_mode=modes[data.get("scoring_mode", "exact")],
        tolerance=data.get("tolerance", 0.0),
        held_out_fraction=data.get("held_out_fraction", 0.0),
        scorer_agent_id=data.get("scorer_agent_id", ""),
    )
    for raw in data["cases"]:
        case = message.cases.add(
            name=raw.get("name", ""), held_out=raw.get("held_out", False), weight=raw.get("weight", 0.0)
        )
        case.inputs.update(raw["inputs"])
        if "expected" in raw:
            case.expected.update(raw["expected"])
    return message


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The real sandbox (namespaces on this machine)."""
    started = await Sandbox.start(SandboxSettings(pool_size=4))
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
def runner(sandbox: Sandbox) -> SandboxRunner:
    """The service's sandbox runner with its default case limits."""
    return SandboxRunner(sandbox, Limits(timeout_seconds=2.0, cpu_seconds=2.0))


@dataclass
class Mesh:
    """A registry and an evolution service, with stubs."""

    tmp_path: Path
    common: CommonSettings
    registry_handle: ServiceHandle
    evolution_handle: ServiceHandle
    registry: registry_pb2_grpc.RegistryServiceStub
    evolution: pb2_grpc.EvolutionServiceStub
    evolution_settings: EvolutionSettings
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def register(self, name: str, code: str) -> registry_pb2.RegisterAgentResponse:
        """Registers an agent in the real registry."""
        response: registry_pb2.RegisterAgentResponse = await self.registry.RegisterAgent(
            registry_pb2.RegisterAgentRequest(name=name, code=code, description=f"{name} (evolution test)")
        )
        return response

    async def start(
        self, agent: str, suite: evolution_pb2.EvaluationSuite, **config: Any
    ) -> evolution_pb2.EvolutionRun:
        """StartEvolution with keyword config fields."""
        operators = config.pop("operators", evolution_pb2.OPERATOR_SET_PROGRAM_TRANSFORM)
        request_id = config.pop("request_id", "")
        response = await self.evolution.StartEvolution(
            pb2.StartEvolutionRequest(
                agent_id=agent,
                suite=suite,
                request_id=request_id,
                config=evolution_pb2.EvolutionConfig(operators=operators, **config),
            )
        )
        return response.run

    async def events(self, run_id: str, after: int = 0) -> list[evolution_pb2.EvolutionEvent]:
        """Every event of a run until its last one."""
        return [
            message.event
            async for message in self.evolution.WatchEvolution(
                pb2.WatchEvolutionRequest(run_id=run_id, after_sequence=after), timeout=120
            )
        ]

    async def get(self, run_id: str) -> evolution_pb2.EvolutionRun:
        """GetEvolution."""
        return (await self.evolution.GetEvolution(pb2.GetEvolutionRequest(run_id=run_id))).run

    async def restart_evolution(self, **settings: Any) -> None:
        """Stops the evolution service and starts it again on the same database (a restart)."""
        await self.evolution_handle.close(grace=1.0)
        self.evolution_handle, self.evolution = await _start_evolution(self, **settings)

    async def close(self) -> None:
        """Closes channels and both servers."""
        for channel in self.channels:
            await channel.close()
        await self.evolution_handle.close(grace=1.0)
        await self.registry_handle.close(grace=1.0)


async def _start_evolution(mesh: Mesh, **overrides: Any) -> tuple[ServiceHandle, pb2_grpc.EvolutionServiceStub]:
    extra = {key: overrides.pop(key) for key in ("model_factory", "runner") if key in overrides}
    settings = mesh.evolution_settings.model_copy(update=overrides)
    handle = await create_server(settings, mesh.common, port=0, **extra)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
    mesh.channels.append(channel)
    return handle, pb2_grpc.EvolutionServiceStub(channel)


async def start_mesh(
    tmp_path: Path, *, database: str = "sqlite", postgres: Any = None, redis_url: str | None = None, **evolution: Any
) -> Mesh:
    """Starts the real registry and the evolution service pointing at it."""
    if database == "sqlite":
        registry_db = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}"
        evolution_db = f"sqlite+aiosqlite:///{tmp_path / 'evolution.sqlite'}"
    else:
        registry_db = evolution_db = postgres()
    common = CommonSettings(data_dir=tmp_path / "data", redis_url=redis_url, log_json=True, log_level="WARNING")
    registry_handle = await create_registry(
        RegistrySettings(database_url=registry_db, analysis_workers=0, cache_namespace=f"t:{uuid.uuid4().hex[:8]}:"),
        common,
        port=0,
    )
    common = common.model_copy(update={"registry_address": f"127.0.0.1:{registry_handle.port}"})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry_handle.port}")
    defaults: dict[str, Any] = {
        "database_url": evolution_db,
        "claim_interval_seconds": 0.2,
        "watch_poll_seconds": 0.2,
        "cache_namespace": f"tdev-test:{uuid.uuid4().hex[:10]}:",
    }
    defaults.update({key: value for key, value in evolution.items() if key not in ("model_factory", "runner")})
    mesh = Mesh(
        tmp_path,
        common,
        registry_handle,
        registry_handle,
        registry_pb2_grpc.RegistryServiceStub(channel),
        pb2_grpc.EvolutionServiceStub(channel),
        EvolutionSettings(**defaults),
        [channel],
    )
    extra = {key: evolution[key] for key in ("model_factory", "runner") if key in evolution}
    mesh.evolution_handle, mesh.evolution = await _start_evolution(mesh, **extra)
    return mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """Registry + evolution on SQLite with the in-process cache."""
    started = await start_mesh(tmp_path)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    """Registry + evolution on SQLite, then on one Postgres database (a schema each) with Redis."""
    if request.param == "sqlite":
        started = await start_mesh(tmp_path)
    else:
        started = await start_mesh(
            tmp_path,
            database="postgres",
            postgres=request.getfixturevalue("make_postgres_database"),
            redis_url=request.getfixturevalue("redis_url"),
        )
    try:
        yield started
    finally:
        await started.close()
