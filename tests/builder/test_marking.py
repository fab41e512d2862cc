"""Registry labels of ended builds: which labels, the marker's retries, give-ups and idempotency (fake registry, the
real repository on SQLite), and which labelled versions a build may reuse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from builder_svc.domain import (
    AgentRegistration,
    AgentSummary,
    Build,
    BuildError,
    BuildState,
    Constraints,
    EventType,
    NewEvent,
    PackagedAgent,
    Progress,
    ServicePackage,
    Stage,
    StageResult,
    StageState,
    Usage,
)
from builder_svc.marking import LabelMarker, end_labels, request_id, retry_delay
from builder_svc.repository import SqlRepository
from builder_svc.server import MIGRATIONS
from builder_svc.stages.reuse import reusable
from tdev_common.clock import from_epoch
from tdev_common.db import create_engine, migrate
from tdev_common.errors import DomainError, InvalidArgument, NotFound, Unavailable

pytestmark = pytest.mark.integration  # real databases, Redis or moto

CONSTRAINTS = Constraints(max_tokens=100, max_cost_usd=1.0, max_duration_seconds=60.0, max_fix_attempts=3)
DRAFT = PackagedAgent("S", "agent_a", "1.0.0", fix_attempts=0, node_id="s")
FIXED = PackagedAgent("S", "agent_a", "1.1.0", fix_attempts=1, node_id="s")
REUSED = PackagedAgent("T", "agent_r", "2.0.0", reused=True, node_id="t")


def _ended(state: BuildState, *, error: BuildError | None = None, package: ServicePackage | None = None) -> Build:
    return Build(build_id="build_0123456789ab", requirements="r", constraints=CONSTRAINTS, state=state, error=error,
                 package=package, registered_agents=(DRAFT, FIXED),
                 stages=(StageResult(Stage.SELECT_OR_CREATE, StageState.SUCCEEDED),))


def _package(*agents: PackagedAgent) -> ServicePackage:
    return ServicePackage("svc_x", "wf_x", "1.0.0", agents, {}, {}, "", (), Usage(), 1.0)


def test_end_labels_say_how_the_build_ended_for_each_version() -> None:
    succeeded = _ended(BuildState.SUCCEEDED, package=_package(FIXED, REUSED))
    assert end_labels(succeeded, "agent_a", "1.1.0") == {"build_state": "validated"}
    assert end_labels(succeeded, "agent_a", "1.0.0") == {"build_state": "superseded"}
    failed = _ended(BuildState.FAILED, error=BuildError("RESOURCE_EXHAUSTED", "budget", Stage.SELECT_OR_CREATE))
    assert end_labels(failed, "agent_a", "1.0.0") == {
        "build_state": "failed", "build_error": "RESOURCE_EXHAUSTED", "build_error_stage": "select_or_create"}
    cancelled = _ended(BuildState.CANCELLED, error=BuildError("CANCELLED", "cancelled by a caller"))
    assert end_labels(cancelled, "agent_a", "1.0.0") == {"build_state": "cancelled", "build_error": "CANCELLED"}
    assert request_id(failed, "agent_a", "1.0.0") == "build_0123456789ab:end:failed:agent_a@1.0.0"
    assert [retry_delay(n, 5.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]


class FakeRegistry:
    """UpdateAgentLabels and the label lookup, failing as scripted; remembers every call."""

    def __init__(self, *, failures: list[DomainError] | None = None, extra: list[tuple[str, str]] | None = None,
                 gone: set[tuple[str, str]] | None = None) -> None:
        self.failures = failures or []
        self.extra = extra or []
        self.gone = gone or set()
        self.calls: list[tuple[str, str, dict[str, str], str]] = []
        self.labels: dict[tuple[str, str], dict[str, str]] = {}
        self.seen_requests: set[str] = set()

    async def search(self, query: str, top_k: int) -> list[AgentSummary]:
        raise AssertionError("not used")

    async def get(self, agent_id: str, version: str) -> AgentSummary:
        raise AssertionError("not used")

    async def register(self, registration: AgentRegistration) -> AgentSummary:
        raise AssertionError("not used")

    async def versions_labelled(self, name_contains: str, label: str, value: str) -> list[tuple[str, str]]:
        assert (name_contains, label, value) == ("0123456789ab", "build_id", "build_0123456789ab")
        return list(self.extra)

    async def update_labels(self, agent_id: str, version: str, labels: Mapping[str, str], request_id: str) -> None:
        self.calls.append((agent_id, version, dict(labels), request_id))
        if self.failures:
            raise self.failures.pop(0)
        if (agent_id, version) in self.gone:
            raise NotFound(f"no version {version}")
        if request_id not in self.seen_requests:
            self.seen_requests.add(request_id)
            self.labels.setdefault((agent_id, version), {}).update(labels)


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[SqlRepository]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'builder.sqlite'}", "builder")
    await migrate(engine, MIGRATIONS, "builder")
    yield SqlRepository(engine)
    await engine.dispose()


async def _fail_build(repository: SqlRepository, now: float) -> None:
    build = Build(build_id="build_0123456789ab", requirements="r", constraints=CONSTRAINTS, state=BuildState.PENDING,
                  create_time=from_epoch(now), update_time=from_epoch(now))
    await repository.insert_build(build, "")
    (claimed,) = await repository.claim("w1", now, 5.0, 1, reclaim_own=False)
    error = BuildError("RESOURCE_EXHAUSTED", "budget", Stage.SELECT_OR_CREATE)
    await repository.append(claimed.lease, NewEvent(EventType.BUILD_FAILED), Progress(
        state=BuildState.FAILED, error=error, registered_agents=(DRAFT, FIXED, REUSED),
        stages=(StageResult(Stage.SELECT_OR_CREATE, StageState.FAILED),)), now, 5.0)


FAILED_LABELS = {"build_state": "failed", "build_error": "RESOURCE_EXHAUSTED", "build_error_stage": "select_or_create"}


async def test_marker_retries_while_the_registry_is_unavailable_then_marks_every_version(
        repository: SqlRepository) -> None:
    clock = Clock()
    await _fail_build(repository, clock.now)
    registry = FakeRegistry(failures=[Unavailable("down"), Unavailable("down")], extra=[("agent_late", "1.0.0")])
    marker = LabelMarker(repository, registry, max_delay_seconds=10.0, clock=clock)
    assert await marker.run_once() == 1  # fails: due again in 0.5 s
    assert await marker.run_once() == 0
    clock.now += 0.5
    assert await marker.run_once() == 1  # fails again: due in 1 s
    clock.now += 0.9
    assert await marker.run_once() == 0
    stored = await repository.get_build("build_0123456789ab")
    assert stored is not None and (stored.state, stored.marking) == (BuildState.FAILED, "pending")
    clock.now += 0.1
    assert await marker.run_once() == 1
    # The reused version is someone else's: never labelled. The unrecorded one the registry knows is.
    assert registry.labels == {("agent_a", "1.0.0"): FAILED_LABELS, ("agent_a", "1.1.0"): FAILED_LABELS,
                               ("agent_late", "1.0.0"): FAILED_LABELS}
    stored = await repository.get_build("build_0123456789ab")
    assert stored is not None and stored.marking == "done"
    # Marking again (a fenced-out run stopped) sends the same request ids: the registry changes nothing twice.
    await marker.again("build_0123456789ab")
    assert await marker.run_once() == 1
    requests = [call[3] for call in registry.calls]
    assert requests[-3:] == sorted(set(requests))
    assert requests[-3:] == [f"build_0123456789ab:end:failed:{ref}"
                             for ref in ("agent_a@1.0.0", "agent_a@1.1.0", "agent_late@1.0.0")]


async def test_marker_skips_versions_the_registry_no_longer_has_and_gives_up_on_invalid_labels(
        repository: SqlRepository) -> None:
    clock = Clock()
    await _fail_build(repository, clock.now)
    registry = FakeRegistry(gone={("agent_a", "1.0.0")})
    marker = LabelMarker(repository, registry, clock=clock)
    assert await marker.run_once() == 1
    assert registry.labels == {("agent_a", "1.1.0"): FAILED_LABELS}
    stored = await repository.get_build("build_0123456789ab")
    assert stored is not None and stored.marking == "done"
    registry.failures = [InvalidArgument("set_labels[x]: bad")]
    await marker.again("build_0123456789ab")
    assert await marker.run_once() == 1
    clock.now += 3600
    assert await marker.run_once() == 0  # the same request can never succeed: not retried
    stored = await repository.get_build("build_0123456789ab")
    assert stored is not None and stored.marking == "failed"


async def test_reuse_trusts_validated_labels_and_asks_about_builds_not_marked_yet() -> None:
    states = {"build_ok": BuildState.SUCCEEDED, "build_bad": BuildState.FAILED, "build_live": BuildState.RUNNING}
    asked: list[list[str]] = []

    async def build_states(ids: Sequence[str]) -> dict[str, BuildState]:
        asked.append(list(ids))
        return {i: states[i] for i in ids if i in states}

    def agent(agent_id: str, **labels: str) -> AgentSummary:
        return AgentSummary(agent_id, agent_id, "1.0.0", "C", "", {}, labels)

    hits = [
        agent("plain"),  # not made by a build
        agent("validated", origin="builder", build_id="build_bad", build_state="validated"),
        agent("superseded", origin="builder", build_id="build_ok", build_state="superseded"),
        agent("failed", origin="builder", build_id="build_live", build_state="failed"),
        agent("cancelled", origin="builder", build_id="build_live", build_state="cancelled"),
        agent("own", origin="builder", build_id="build_me", build_state="unvalidated"),
        agent("ended_unmarked", origin="builder", build_id="build_ok", build_state="unvalidated"),
        agent("failed_unmarked", origin="builder", build_id="build_bad", build_state="unvalidated"),
        agent("running", origin="builder", build_id="build_live", build_state="unvalidated"),
        agent("unknown_build", origin="builder", build_id="build_gone", build_state="unvalidated"),
    ]
    usable = await reusable("build_me", hits, build_states)
    assert [a.agent_id for a in usable] == ["plain", "validated", "running", "unknown_build"]
    assert asked == [["build_bad", "build_gone", "build_live", "build_me", "build_ok"]]


async def test_upgrading_queues_the_builds_that_ended_before_for_marking(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite'}", "builder")

    def upgrade_to_0002(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes.update(connection=connection, schema="builder")
        command.upgrade(config, "0002")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade_to_0002)
        for build_id, state in (("build_old_failed", 4), ("build_old_running", 2), ("build_old_done", 3)):
            await connection.execute(sa.text(
                "INSERT INTO builds (build_id, requirements, constraints, state, stages, checkpoint, usage, "
                "registered_agents, elapsed_seconds, last_sequence, create_time, update_time, lease_epoch) VALUES "
                "(:id, 'r', :constraints, :state, '[]', '{}', '{}', '[]', 0, 1, 1, 1, 0)"),
                {"id": build_id, "state": state, "constraints": json.dumps(CONSTRAINTS.to_json())})
    try:
        assert await migrate(engine, MIGRATIONS, "builder") == "0004"
        jobs = await SqlRepository(engine).claim_marks(10.0, 60.0, 10)
        assert sorted(job.build.build_id for job in jobs) == ["build_old_done", "build_old_failed"]
    finally:
        await engine.dispose()
