"""The builder's tables on SQLite and Postgres: fenced event writes, cancel, leases, idempotency, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from builder_svc.domain import (
    Build,
    BuildFilter,
    BuildState,
    Constraints,
    EventType,
    NewEvent,
    PackagedAgent,
    Progress,
    Stage,
    StageResult,
    StageState,
    Usage,
)
from builder_svc.models import BuildEventRow, BuildRow
from builder_svc.ports import LeaseLost
from builder_svc.repository import SqlRepository
from builder_svc.server import MIGRATIONS
from tdev_common.clock import from_epoch
from tdev_common.db import create_engine, migrate
from tdev_common.errors import FailedPrecondition, NotFound
from tests.builder.conftest import create_database, drop_database
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, require_service

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CONSTRAINTS = Constraints(max_tokens=100, max_cost_usd=1.0, max_duration_seconds=60.0, max_fix_attempts=3)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[AsyncEngine]:
    """A migrated builder schema on SQLite or on a fresh Postgres database, once per module and backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('builder-repo') / 'builder.sqlite'}"
    else:
        require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
        url = await create_database()
    engine = create_engine(url, "builder")
    try:
        assert await migrate(engine, MIGRATIONS, "builder") == "0004"
        yield engine
    finally:
        await engine.dispose()
        if request.param == "postgres":
            await drop_database(url)


@pytest_asyncio.fixture(loop_scope="module")
async def repository(migrated: AsyncEngine) -> SqlRepository:
    """A repository over the module's database, with empty tables."""
    async with migrated.begin() as connection:
        for table in (BuildEventRow.__table__, BuildRow.__table__):
            await connection.execute(table.delete())  # type: ignore[attr-defined]
    return SqlRepository(migrated)


def _build(build_id: str, created: float) -> Build:
    # Times are given as epoch seconds to keep the tests short; the domain holds datetimes.
    return Build(build_id=build_id, requirements="Sort the numbers", constraints=CONSTRAINTS,
                 state=BuildState.PENDING, create_time=from_epoch(created), update_time=from_epoch(created))


async def test_request_ids_make_inserts_idempotent(repository: SqlRepository) -> None:
    first, created = await repository.insert_build(_build("build_a", 10.0), "req-1")
    assert first.build_id == "build_a"
    again, created_again = await repository.insert_build(_build("build_b", 11.0), "req-1")
    assert (created, created_again, again.build_id) == (True, False, "build_a")
    assert await repository.get_build("build_b") is None
    stored = await repository.get_build("build_a")
    assert stored is not None and stored.constraints == CONSTRAINTS and stored.state == BuildState.PENDING


async def test_events_are_written_with_progress_and_fenced_by_the_lease(repository: SqlRepository) -> None:
    await repository.insert_build(_build("build_a", 10.0), "")
    (claimed,) = await repository.claim("w1", 100.0, 5.0, 10, reclaim_own=False)
    assert (claimed.lease.owner, claimed.lease.epoch, claimed.checkpoint) == ("w1", 1, {})
    progress = Progress(state=BuildState.RUNNING, stages=(StageResult(Stage.ANALYSE, StageState.RUNNING),),
                        checkpoint={"done": []}, usage=Usage(3, 4, 0.5, 1, ("m",)), elapsed_seconds=1.5,
                        registered_agents=(PackagedAgent("S", "agent_1", "1.0.0", node_id="s"),))
    first = await repository.append(claimed.lease, NewEvent(EventType.BUILD_STARTED, message="go"), progress,
                                    101.0, 5.0)
    second = await repository.append(claimed.lease, NewEvent(EventType.STAGE_STARTED, Stage.ANALYSE, "analyse",
                                                             {"attempt": 1}), progress, 102.0, 5.0)
    assert (first.sequence, second.sequence, second.stage, second.details) == (1, 2, Stage.ANALYSE, {"attempt": 1})
    stored = await repository.get_build("build_a")
    assert stored is not None
    assert (stored.state, stored.last_sequence, stored.usage, stored.elapsed_seconds) == (
        BuildState.RUNNING, 2, Usage(3, 4, 0.5, 1, ("m",)), 1.5)
    assert stored.registered_agents == progress.registered_agents and stored.stages == progress.stages
    # another worker takes the build after the lease expired: the first worker's writes are rejected
    (taken,) = await repository.claim("w2", 200.0, 5.0, 10, reclaim_own=False)
    assert taken.lease.epoch == 2 and taken.checkpoint == {"done": []}
    with pytest.raises(LeaseLost):
        await repository.append(claimed.lease, NewEvent(EventType.STAGE_PROGRESS), progress, 201.0, 5.0)
    third = await repository.append(taken.lease, NewEvent(EventType.BUILD_RESUMED), progress, 202.0, 5.0)
    assert third.sequence == 3
    assert [e.sequence for e in await repository.events_after("build_a", 1, 10)] == [2, 3]


async def test_cancel_ends_the_build_and_fences_out_its_worker(repository: SqlRepository) -> None:
    await repository.insert_build(_build("build_a", 10.0), "")
    (claimed,) = await repository.claim("w1", 100.0, 5.0, 10, reclaim_own=False)
    running = Progress(state=BuildState.RUNNING, stages=(StageResult(Stage.ANALYSE, StageState.RUNNING),))
    await repository.append(claimed.lease, NewEvent(EventType.BUILD_STARTED), running, 101.0, 5.0)
    build, event = await repository.cancel("build_a", "enough", 102.0)
    assert (build.state, build.last_sequence) == (BuildState.CANCELLED, 2)
    assert build.error is not None and (build.error.code, build.error.message, build.error.stage) == (
        "CANCELLED", "cancelled: enough", Stage.ANALYSE)
    assert build.stages[0].state == StageState.FAILED
    assert (event.sequence, event.type, event.stage) == (2, EventType.BUILD_CANCELLED, Stage.ANALYSE)
    with pytest.raises(LeaseLost):
        await repository.append(claimed.lease, NewEvent(EventType.STAGE_PROGRESS), running, 103.0, 5.0)
    assert await repository.renew([claimed.lease], 104.0, 5.0) == set()
    assert await repository.claim("w2", 1000.0, 5.0, 10, reclaim_own=False) == []
    with pytest.raises(FailedPrecondition):
        await repository.cancel("build_a", "", 105.0)
    with pytest.raises(NotFound):
        await repository.cancel("build_missing", "", 105.0)


async def test_leases_renew_release_and_come_back_to_their_owner(repository: SqlRepository) -> None:
    await repository.insert_build(_build("build_a", 10.0), "")
    await repository.insert_build(_build("build_b", 11.0), "")
    claimed = await repository.claim("w1", 100.0, 5.0, 1, reclaim_own=False)
    assert [c.build.build_id for c in claimed] == ["build_a"]  # oldest first, up to the limit
    assert await repository.claim("w2", 101.0, 5.0, 1, reclaim_own=False, build_id="build_a") == []
    assert await repository.renew([claimed[0].lease], 104.0, 5.0) == {"build_a"}
    assert await repository.claim("w2", 106.0, 5.0, 5, reclaim_own=False, build_id="build_a") == []  # renewed
    assert await repository.claim("w1", 107.0, 5.0, 5, reclaim_own=True, exclude=["build_a", "build_b"]) == []
    (again,) = await repository.claim("w1", 107.0, 5.0, 5, reclaim_own=True, build_id="build_a")
    assert again.lease.epoch == 2  # a restarted replica with a stable id takes its own build back at once
    await repository.release(again.lease)
    (other,) = await repository.claim("w2", 108.0, 5.0, 5, reclaim_own=False, build_id="build_a")
    assert (other.lease.owner, other.lease.epoch) == ("w2", 3)


async def test_builds_list_newest_first_with_a_state_filter(repository: SqlRepository) -> None:
    for index in range(5):
        await repository.insert_build(_build(f"build_{index}", 10.0 + index), "")
    (claimed,) = await repository.claim("w1", 100.0, 5.0, 1, reclaim_own=False)
    await repository.append(claimed.lease, NewEvent(EventType.BUILD_FAILED), Progress(state=BuildState.FAILED),
                            101.0, 5.0)
    page = await repository.list_builds(BuildFilter(), 2, None)
    assert [b.build_id for b in page] == ["build_4", "build_3"]
    rest = await repository.list_builds(BuildFilter(), 10, (page[-1].create_time, page[-1].build_id))
    assert [b.build_id for b in rest] == ["build_2", "build_1", "build_0"]
    failed = await repository.list_builds(BuildFilter(state=BuildState.FAILED), 10, None)
    assert [b.build_id for b in failed] == ["build_0"]
    assert await repository.states(["build_0", "build_1", "nope"]) == {"build_0": BuildState.FAILED,
                                                                       "build_1": BuildState.PENDING}


async def test_an_ending_build_queues_its_versions_to_be_marked_with_fenced_retries(
        repository: SqlRepository) -> None:
    await repository.insert_build(_build("build_a", 10.0), "")
    await repository.insert_build(_build("build_b", 11.0), "")
    claimed = await repository.claim("w1", 100.0, 5.0, 10, reclaim_own=False)
    running = Progress(state=BuildState.RUNNING)
    for item in claimed:
        await repository.append(item.lease, NewEvent(EventType.BUILD_STARTED), running, 101.0, 5.0)
    assert await repository.claim_marks(102.0, 60.0, 10) == []  # nothing has ended
    assert not await repository.mark_again("build_a", 102.0)
    await repository.append(claimed[0].lease, NewEvent(EventType.BUILD_FAILED), Progress(state=BuildState.FAILED),
                            103.0, 5.0)
    await repository.cancel("build_b", "", 104.0)
    jobs = await repository.claim_marks(105.0, 60.0, 10)
    assert sorted((job.build.build_id, job.build.state, job.build.marking, job.attempts) for job in jobs) == [
        ("build_a", BuildState.FAILED, "pending", 0), ("build_b", BuildState.CANCELLED, "pending", 0)]
    assert await repository.claim_marks(106.0, 60.0, 10) == []  # held by the first claim for 60 s
    first, second = sorted(jobs, key=lambda job: job.build.build_id)
    assert await repository.finish_marks(first, error="UNAVAILABLE: down", retry_at=110.0)
    assert await repository.claim_marks(109.0, 60.0, 10) == []
    (retry,) = await repository.claim_marks(110.0, 60.0, 10)
    assert (retry.build.build_id, retry.attempts, retry.epoch) == ("build_a", 1, first.epoch)
    assert await repository.finish_marks(retry)
    stored = await repository.get_build("build_a")
    assert stored is not None and stored.marking == "done"
    # Asked to mark again while a job runs: that job's "done" does not swallow the newer request.
    assert await repository.mark_again("build_b", 111.0)
    assert not await repository.finish_marks(second)
    (newer,) = await repository.claim_marks(112.0, 60.0, 10)
    assert (newer.build.build_id, newer.epoch) == ("build_b", second.epoch + 1)
    assert await repository.finish_marks(newer, error="INVALID_ARGUMENT: bad label")  # no retry: given up
    stored = await repository.get_build("build_b")
    assert stored is not None and stored.marking == "failed"
    assert await repository.claim_marks(1000.0, 60.0, 10) == []
