"""Builder use-cases on the in-memory repository: admission, start and replay, get, list, cancel, watch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from builder_svc.admission import Defaults
from builder_svc.domain import (
    BuildEvent,
    BuildFilter,
    BuildState,
    EventType,
    NewEvent,
    Progress,
    RequestedConstraints,
    Stage,
    StageResult,
    StageState,
    StartCommand,
)
from builder_svc.ports import LeaseLost
from builder_svc.service import BuilderService
from tdev_common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from tdev_common.event_stream import EventHub
from tests.unit.fakes.builder import FakeRepository, RecordingWorker

DEFAULTS = Defaults(max_requirements_chars=100, max_tokens=1000, max_cost_usd=1.0, max_duration_seconds=60.0,
                    max_fix_attempts=2, max_fix_attempts_limit=5, max_sample_inputs=2)


class World:
    def __init__(self) -> None:
        self.repo = FakeRepository()
        self.worker = RecordingWorker()
        self.notifier: EventHub[BuildEvent] = EventHub(None, "builder-unit", 1000)
        self.ticks = itertools.count(1000)
        ids = (f"build_{n:012d}" for n in itertools.count(1))
        self.service = BuilderService(self.repo, self.worker, self.notifier, DEFAULTS, watch_poll_seconds=0.05,
                                      clock=lambda: float(next(self.ticks)), new_id=lambda: next(ids))


@pytest.fixture
def world() -> World:
    return World()


def command(requirements: str = "count the words of a text", request_id: str = "", fingerprint: str = "",
            **constraints: object) -> StartCommand:
    # The fingerprint is opaque to the use-case (the servicer computes it from the request message): any string
    # stands for "this request", another string for a different one.
    return StartCommand(requirements, RequestedConstraints(**constraints),  # type: ignore[arg-type]
                        request_id, fingerprint)


def violations(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in error.violations]


async def test_start_stores_a_pending_build_with_defaults_and_wakes_the_worker(world: World) -> None:
    build = await world.service.start(command("  count words  ", max_tokens=500))
    assert (build.build_id, build.state, build.requirements) == ("build_000000000001", BuildState.PENDING,
                                                                "count words")
    assert (build.constraints.max_tokens, build.constraints.max_cost_usd, build.constraints.max_fix_attempts) == (
        500, 1.0, 2)
    assert world.worker.wakes == 1
    assert await world.service.get(build.build_id) == build


async def test_start_replayed_request_id_returns_the_first_build_without_waking(world: World) -> None:
    first = await world.service.start(command(request_id="req-1", fingerprint="words"))
    again = await world.service.start(command(request_id="req-1", fingerprint="words"))
    assert again == first
    assert (list(world.repo.rows), world.worker.wakes) == (["build_000000000001"], 1)
    assert world.repo.rows[first.build_id].fingerprint == "words"


async def test_start_request_id_reused_for_other_requirements_is_request_id_reused(world: World) -> None:
    first = await world.service.start(command(request_id="req-1", fingerprint="words"))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start(command("something else", request_id="req-1", fingerprint="else"))
    problem = (f'was used before for a different request (the one that made build "{first.build_id}"); send the '
               "same request to replay it, or a new request id for a new request")
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'req-1' {problem}"
    assert (list(world.repo.rows), world.worker.wakes) == (["build_000000000001"], 1)


async def test_start_request_id_stored_without_a_fingerprint_replays_for_any_request(world: World) -> None:
    # A build stored before fingerprints existed has none: a replay of its request id keeps working.
    first = await world.service.start(command(request_id="req-1"))
    assert world.repo.rows[first.build_id].fingerprint is None
    again = await world.service.start(command("something else", request_id="req-1", fingerprint="else"))
    assert again == first
    assert (list(world.repo.rows), world.worker.wakes) == (["build_000000000001"], 1)


@pytest.mark.parametrize(("bad", "expected"), [
    (command("   "), [("requirements", "must not be empty")]),
    (command("x" * 101), [("requirements", "101 characters; the limit is 100")]),
    (command(max_tokens=-1, max_fix_attempts=9), [
        ("constraints.max_tokens", "must be a positive number or 0, got -1"),
        ("constraints.max_fix_attempts", "at most 5, got 9")]),
    (command(sample_inputs=({}, {}, {})), [("constraints.sample_inputs", "3 samples; at most 2")]),
    (command(max_cost_usd=float("inf")), [("constraints.max_cost_usd", "must be a positive number or 0, got inf")]),
])
async def test_start_bad_request_is_invalid_argument_listing_every_problem(
        world: World, bad: StartCommand, expected: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start(bad)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert violations(caught.value) == expected
    more = f" (and {len(expected) - 1} more problems)" if len(expected) > 1 else ""
    assert caught.value.message == f"{expected[0][0]}: {expected[0][1]}{more}"
    assert (world.repo.rows, world.worker.wakes) == ({}, 0)


async def _drain(events: AsyncIterator[object]) -> list[object]:
    return [e async for e in events]


@pytest.mark.parametrize("call", [
    lambda s: s.get(""), lambda s: s.cancel("", "why"), lambda s: _drain(s.watch("", 0)),
], ids=["get", "cancel", "watch"])
async def test_an_empty_build_id_is_field_required_not_a_lookup(
        world: World, call: Callable[[BuilderService], Awaitable[object]]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await call(world.service)
    assert (caught.value.reason, violations(caught.value), caught.value.message) == (
        "FIELD_REQUIRED", [("build_id", "is required")], "build_id: is required")
    assert world.worker.cancelled == []


@pytest.mark.parametrize("call", [
    lambda s: s.get("build_nope"), lambda s: s.cancel("build_nope", ""), lambda s: _drain(s.watch("build_nope", 0)),
], ids=["get", "cancel", "watch"])
async def test_an_unknown_build_is_not_found_with_its_id(
        world: World, call: Callable[[BuilderService], Awaitable[object]]) -> None:
    with pytest.raises(NotFound) as missing:
        await call(world.service)
    assert (missing.value.reason, missing.value.message, missing.value.metadata) == (
        "BUILD_NOT_FOUND", 'build "build_nope" does not exist', {"build_id": "build_nope"})


async def test_list_pages_newest_first_and_filters_by_state(world: World) -> None:
    ids = [(await world.service.start(command())).build_id for _ in range(5)]
    await world.service.cancel(ids[1], "")
    pages, after = [], None
    while True:
        page = await world.service.list(BuildFilter(), 2, after)
        pages.append([b.build_id for b in page.items])
        if (after := page.after) is None:
            break
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]
    cancelled = await world.service.list(BuildFilter(state=BuildState.CANCELLED), 10, None)
    assert [b.build_id for b in cancelled.items] == [ids[1]]


async def test_cancel_ends_a_running_build_fences_its_worker_and_marks_the_stage_failed(world: World) -> None:
    build = await world.service.start(command())
    [claimed] = await world.repo.claim("worker-1", 1.0, 30.0, 5, reclaim_own=False)
    running = Progress(BuildState.RUNNING).with_stage(StageResult(Stage.ANALYSE, StageState.RUNNING))
    await world.repo.append(claimed.lease, NewEvent(EventType.STAGE_STARTED, Stage.ANALYSE), running, 2.0, 30.0)
    cancelled = await world.service.cancel(build.build_id, "changed my mind")
    assert cancelled.state is BuildState.CANCELLED
    assert cancelled.error is not None
    assert (cancelled.error.code, cancelled.error.message, cancelled.error.stage) == (
        "CANCELLED", "cancelled: changed my mind", Stage.ANALYSE)
    assert [(s.stage, s.state, s.summary) for s in cancelled.stages] == [(Stage.ANALYSE, StageState.FAILED,
                                                                         "cancelled")]
    assert world.worker.cancelled == [build.build_id]
    with pytest.raises(LeaseLost):
        await world.repo.append(claimed.lease, NewEvent(EventType.STAGE_PROGRESS), running, 3.0, 30.0)
    events = [e async for e in world.service.watch(build.build_id, 0)]
    assert [(e.sequence, e.type) for e in events] == [(1, EventType.STAGE_STARTED), (2, EventType.BUILD_CANCELLED)]


async def test_cancel_of_an_ended_build_fails_and_of_an_unknown_one_is_not_found(world: World) -> None:
    build = await world.service.start(command())
    await world.service.cancel(build.build_id, "")
    with pytest.raises(FailedPrecondition) as ended:
        await world.service.cancel(build.build_id, "")
    assert ended.value.message == (f"build {build.build_id} is CANCELLED already; only pending or running builds "
                                   "can be cancelled")
    assert (ended.value.reason, ended.value.metadata) == (
        "BUILD_ENDED", {"build_id": build.build_id, "state": "CANCELLED"})
    with pytest.raises(NotFound) as missing:
        await world.service.cancel("build_nope", "")
    assert missing.value.reason == "BUILD_NOT_FOUND"
    assert world.worker.cancelled == [build.build_id]


async def test_watch_follows_live_events_until_the_build_ends(world: World) -> None:
    build = await world.service.start(command())
    [claimed] = await world.repo.claim("worker-1", 1.0, 30.0, 5, reclaim_own=False)
    received: list[EventType] = []

    async def follow() -> None:
        async for event in world.service.watch(build.build_id, 0):
            received.append(event.type)

    watcher = asyncio.create_task(follow())
    for kind, state in ((EventType.BUILD_STARTED, BuildState.RUNNING), (EventType.BUILD_SUCCEEDED,
                                                                       BuildState.SUCCEEDED)):
        await asyncio.sleep(0.01)
        await world.repo.append(claimed.lease, NewEvent(kind), Progress(state), 2.0, 30.0)
        world.notifier.announce(build.build_id)
    await asyncio.wait_for(watcher, 5)
    assert received == [EventType.BUILD_STARTED, EventType.BUILD_SUCCEEDED]
    assert (await world.service.get(build.build_id)).marking == "pending"


async def test_watch_with_negative_sequence_is_invalid_and_unknown_is_not_found(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        [e async for e in world.service.watch("build_x", -1)]
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_FIELD", [("after_sequence", "must not be negative")])
    with pytest.raises(NotFound) as missing:
        [e async for e in world.service.watch("build_nope", 0)]
    assert missing.value.reason == "BUILD_NOT_FOUND"


async def test_claim_bumps_the_epoch_so_an_expired_holders_write_is_rejected(world: World) -> None:
    await world.service.start(command())
    [first] = await world.repo.claim("worker-1", 1.0, 10.0, 5, reclaim_own=False)
    assert await world.repo.claim("worker-2", 5.0, 10.0, 5, reclaim_own=False) == []  # still held
    [second] = await world.repo.claim("worker-2", 20.0, 10.0, 5, reclaim_own=False)  # expired at 11
    assert (first.lease.epoch, second.lease.epoch) == (1, 2)
    with pytest.raises(LeaseLost):
        await world.repo.append(first.lease, NewEvent(EventType.BUILD_STARTED), Progress(BuildState.RUNNING),
                                21.0, 10.0)
    assert await world.repo.renew([first.lease], 22.0, 10.0) == set()
    assert await world.repo.renew([second.lease], 22.0, 10.0) == {second.lease.build_id}
