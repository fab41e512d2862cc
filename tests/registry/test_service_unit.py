"""Use-cases with fake sandbox and listener over an SQLite repository (no gRPC, no sandbox process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from common.db import create_engine, migrate
from common.errors import Aborted, InvalidArgument
from registry_svc.config import SCHEMA
from registry_svc.domain import AgentVersion, ExecutionRecord, NewVersion, RegisterCommand
from registry_svc.ports import VersionConflict
from registry_svc.repository import SqlRepository
from registry_svc.server import MIGRATIONS
from registry_svc.service import Limits, RegistryService
from tests.registry.conftest import tiny_agent
from tests.registry.fakes import FakeInspector


class RecordingListener:
    """Remembers every change it is told about."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, list[str]]] = []

    async def agent_changed(self, agent_id: str, versions: Sequence[str]) -> None:
        self.changes.append((agent_id, list(versions)))


class ConflictingRepository(SqlRepository):
    """Loses the first ``conflicts`` inserts to an imaginary racing writer."""

    conflicts = 0

    async def insert_version(self, new: NewVersion) -> AgentVersion:
        if self.conflicts:
            self.conflicts -= 1
            raise VersionConflict("a racing writer won")
        return await super().insert_version(new)


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[ConflictingRepository]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unit.sqlite'}", SCHEMA)
    await migrate(engine, MIGRATIONS, SCHEMA)
    yield ConflictingRepository(engine)
    await engine.dispose()


async def test_same_code_is_answered_without_loading_it_in_the_sandbox_again(
        repository: ConflictingRepository) -> None:
    inspector, listener = FakeInspector(), RecordingListener()
    service = RegistryService(repository, inspector, listener)
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    again = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (first.created, again.created, again.agent.version) == (True, False, "1.0.0")
    assert inspector.calls == 1
    assert listener.changes == [(first.agent.agent_id, ["1.0.0"])]


async def test_sandbox_failure_is_invalid_argument_and_stores_nothing(repository: ConflictingRepository) -> None:
    service = RegistryService(repository, FakeInspector(), RecordingListener())
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a") + "# crash-in-sandbox\n"))
    assert caught.value.message == "code: loading Tiny in the sandbox failed: RuntimeError: boom"
    assert await repository.count_agents() == 0


async def test_register_retries_when_a_racing_writer_wins(repository: ConflictingRepository) -> None:
    repository.conflicts = 2
    registered = await RegistryService(repository, FakeInspector(), RecordingListener()).register(
        RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (registered.created, registered.agent.version) == (True, "1.0.0")


async def test_register_gives_up_with_aborted_when_races_never_end(repository: ConflictingRepository) -> None:
    repository.conflicts = 100
    service = RegistryService(repository, FakeInspector(), RecordingListener(), limits=Limits(register_attempts=3))
    with pytest.raises(Aborted):
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))


async def test_recorded_executions_tell_the_listener_which_versions_changed(
        repository: ConflictingRepository) -> None:
    listener = RecordingListener()
    service = RegistryService(repository, FakeInspector(), listener)
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("b")))
    listener.changes.clear()
    result = await service.record_executions([
        ExecutionRecord("e1", agent.agent_id, "1.0.0", True, 1.0),
        ExecutionRecord("e2", agent.agent_id, "1.1.0", False, 2.0),
        ExecutionRecord("e1", agent.agent_id, "1.0.0", True, 1.0),
    ])
    assert (result.accepted, result.duplicates) == (2, 1)
    assert listener.changes == [(agent.agent_id, ["1.0.0", "1.1.0"])]
