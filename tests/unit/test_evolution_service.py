"""Evolution use-cases on the in-memory repository, registry and an in-process runner (the real executor)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

import pytest

from evolution_svc.domain import (
    AgentSource,
    ConfigOverrides,
    EvaluationCase,
    EvaluationLimits,
    EvaluationSuite,
    Event,
    EventType,
    EvolutionConfig,
    JsonObject,
    ListQuery,
    OperatorSet,
    RunState,
    ScoringMode,
    StartRequest,
    StopReason,
)
from evolution_svc.executor import ExecutorSettings, RunExecutor
from evolution_svc.ports import CaseRun
from evolution_svc.service import EvolutionService
from tdev_common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from tdev_common.event_stream import EventHub
from tests.unit.fakes.evolution import FakeRegistry, FakeRunRepository, InProcessRunner

DOUBLER = '''"""Doubles x."""


class Doubler:
    """Doubles x."""

    def get_capabilities(self) -> dict:
        """Capabilities."""
        return {"name": "doubler"}

    def execute(self, inputs: dict) -> dict:
        """Runs."""
        return {"y": inputs["x"] * FACTOR}


FACTOR = 2
'''
SEED = AgentSource("agent_doubler0000", "doubler", "1.0.0", DOUBLER)
TRIPLER = AgentSource("agent_tripler0000", "tripler", "1.0.0", DOUBLER.replace("FACTOR = 2", "FACTOR = 3"))
SUITE = EvaluationSuite(cases=tuple(EvaluationCase(f"c{x}", {"x": x}, {"y": 2 * x}) for x in range(1, 5)))
SMALL = ConfigOverrides(population_size=4, generations=2, islands=1, elitism=1, seed=7, speed_weight=0.0,
                        size_weight=0.0, plateau_generations=0)


class HoldingRunner(InProcessRunner):
    """Holds every batch until released: the run stays RUNNING while a test cancels or lists it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def run_cases(self, code: str, inputs: Sequence[JsonObject], limits: EvaluationLimits) -> list[CaseRun]:
        await self.release.wait()
        return await super().run_cases(code, inputs, limits)


class World:
    def __init__(self, runner: InProcessRunner, *, model_available: bool = False) -> None:
        self.repo = FakeRunRepository()
        self.registry = FakeRegistry([SEED, TRIPLER])
        self.runner = runner
        self.notifier: EventHub[Event] = EventHub(None, "evolution-unit", 1000)
        self.executor = RunExecutor(self.repo, self.registry, runner, self.notifier, owner="replica-1",
                                    settings=ExecutorSettings(lease_seconds=30.0, evaluation_parallelism=2))
        self.service = EvolutionService(self.repo, self.registry, self.executor, self.notifier, EvolutionConfig(),
                                        model_available=model_available, watch_poll_seconds=0.05)

    async def finished(self, run_id: str) -> list[EventType]:
        await asyncio.wait_for(self.executor.wait_idle(), 20)
        return [e.type async for e in self.service.watch(run_id, 0)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World(InProcessRunner())
    yield world
    await world.executor.stop()


@pytest.fixture
async def held() -> AsyncIterator[World]:
    world = World(HoldingRunner())
    yield world
    await world.executor.stop()


def request(agent: str = "doubler", suite: EvaluationSuite = SUITE, overrides: ConfigOverrides = SMALL,
            request_id: str = "", fingerprint: str = "") -> StartRequest:
    # The fingerprint is opaque to the use-case (the servicer computes it from the request message): any string
    # stands for "this request", another string for a different one.
    return StartRequest(agent=agent, agent_version="", suite=suite, overrides=overrides, request_id=request_id,
                        fingerprint=fingerprint)


def violations(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in error.violations]


async def test_a_perfect_seed_stops_at_once_and_is_not_promoted(world: World) -> None:
    run = await world.service.start(request())
    assert (run.state, run.agent_id, run.agent_version) == (RunState.PENDING, "agent_doubler0000", "1.0.0")
    assert await world.finished(run.run_id) == [EventType.RUN_STARTED, EventType.PROMOTION_DECIDED,
                                                 EventType.RUN_SUCCEEDED]
    done = await world.service.get(run.run_id)
    assert (done.state, done.stop_reason, done.seed_fitness) == (RunState.SUCCEEDED, StopReason.PERFECT, 1.0)
    assert done.promotion is not None and not done.promotion.promoted
    assert world.registry.registered == []


async def test_the_evaluation_budget_stops_a_run_after_measuring_the_seed(world: World) -> None:
    budget = replace(SMALL, max_evaluations=1)
    run = await world.service.start(request("tripler", overrides=budget))
    await world.finished(run.run_id)
    done = await world.service.get(run.run_id)
    assert (done.state, done.stop_reason, done.generations) == (RunState.SUCCEEDED, StopReason.EVALUATION_BUDGET, ())
    assert done.stop_message.startswith("evaluation budget used up: ")
    assert done.seed_fitness < 1.0


async def test_start_replayed_request_id_returns_the_first_run(world: World) -> None:
    first = await world.service.start(request(request_id="req-1", fingerprint="doubler"))
    again = await world.service.start(request(request_id="req-1", fingerprint="doubler"))
    assert (again.run_id, again.agent_id) == (first.run_id, first.agent_id)
    assert list(world.repo.rows) == [first.run_id]
    assert world.repo.rows[first.run_id].fingerprint == "doubler"


async def test_start_request_id_reused_for_another_agent_is_request_id_reused(world: World) -> None:
    first = await world.service.start(request(request_id="req-1", fingerprint="doubler"))
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start(request("tripler", request_id="req-1", fingerprint="tripler"))
    problem = (f'was used before for a different request (the one that made evolution run "{first.run_id}"); '
               "send the same request to replay it, or a new request id for a new request")
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'req-1' {problem}"
    assert list(world.repo.rows) == [first.run_id]


async def test_start_request_id_stored_without_a_fingerprint_replays_for_any_request(world: World) -> None:
    # A run stored before fingerprints existed has none: a replay of its request id keeps working.
    first = await world.service.start(request(request_id="req-1"))
    assert world.repo.rows[first.run_id].fingerprint is None
    again = await world.service.start(request("tripler", request_id="req-1", fingerprint="tripler"))
    assert (again.run_id, again.agent_id) == (first.run_id, first.agent_id)
    assert list(world.repo.rows) == [first.run_id]


async def test_effective_config_uses_transforms_without_a_model_and_both_with_one(world: World) -> None:
    unset = replace(EvolutionConfig(), operators=OperatorSet.UNSPECIFIED)

    def effective(model_available: bool) -> EvolutionConfig:
        return EvolutionService(world.repo, world.registry, world.executor, world.notifier, unset,
                                model_available=model_available).effective_config(request())

    offline, online = effective(False), effective(True)
    assert (offline.operators, online.operators, offline.seed) == (OperatorSet.PROGRAM_TRANSFORM, OperatorSet.MIXED, 7)


@pytest.mark.parametrize(("bad", "reason", "expected"), [
    (request(agent=""), "FIELD_REQUIRED", [("agent_id", "is required")]),
    (request(suite=EvaluationSuite(cases=())), "INVALID_SUITE", [("suite.cases", "the suite has no cases")]),
    (request(suite=EvaluationSuite(cases=(EvaluationCase("a", {"x": 1}, None),))), "INVALID_SUITE",
     [("suite.cases[0] (\"a\").expected", "is missing")]),
    (request(overrides=ConfigOverrides(population_size=1, seed=1)), "INVALID_CONFIG", [
        ("config.population_size", "must be 2..1000"),
        ("config.islands", "must be at least 1 with at least 2 candidates per island"),
        ("config.elitism", "must be 0..-1 (below the island size)"),
        ("config.migration_size", "must be below the island size")]),
    (request(suite=EvaluationSuite(cases=SUITE.cases, scoring_mode=ScoringMode.SCORER_AGENT)), "INVALID_SUITE",
     [("suite.scorer_agent_id", "is required with SCORING_MODE_SCORER_AGENT")]),
    # Every problem of agent_id, suite and config in one error; the reason is the first problem's.
    (request(agent="", suite=EvaluationSuite(cases=())), "FIELD_REQUIRED",
     [("agent_id", "is required"), ("suite.cases", "the suite has no cases")]),
], ids=["no-agent", "no-cases", "no-expected", "population-of-1", "no-scorer", "no-agent-no-cases"])
async def test_start_bad_request_is_invalid_argument_listing_every_problem(
        world: World, bad: StartRequest, reason: str, expected: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.service.start(bad)
    assert (caught.value.reason, violations(caught.value)) == (reason, expected)
    more = f" (and {len(expected) - 1} more problems)" if len(expected) > 1 else ""
    assert caught.value.message == f"{expected[0][0]}: {expected[0][1]}{more}"
    assert world.repo.rows == {}


async def test_start_with_unknown_agent_or_scorer_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as agent:
        await world.service.start(request("nobody"))
    assert (agent.value.reason, agent.value.message, agent.value.metadata) == (
        "AGENT_NOT_FOUND", 'unknown agent "nobody": no registry agent has this id or name', {"agent": "nobody"})
    scored = EvaluationSuite(cases=SUITE.cases, scoring_mode=ScoringMode.SCORER_AGENT, scorer_agent_id="ghost")
    with pytest.raises(NotFound) as scorer:
        await world.service.start(request(suite=scored))
    # The registry's reason and metadata are kept; the message says which field named the agent.
    assert (scorer.value.reason, scorer.value.message, scorer.value.metadata) == (
        "AGENT_NOT_FOUND", 'suite.scorer_agent_id: unknown agent "ghost": no registry agent has this id or name',
        {"agent": "ghost"})
    assert world.repo.rows == {}


async def test_cancel_stops_a_running_run_and_a_second_cancel_fails(held: World) -> None:
    run = await held.service.start(request())
    cancelled = await held.service.cancel(run.run_id, "enough")
    assert (cancelled.state, cancelled.stop_reason, cancelled.stop_message) == (
        RunState.CANCELLED, StopReason.CANCELLED, "cancelled: enough")
    await asyncio.wait_for(held.executor.wait_idle(), 5)
    assert [e.type async for e in held.service.watch(run.run_id, 0)] == [EventType.RUN_CANCELLED]
    with pytest.raises(FailedPrecondition) as again:
        await held.service.cancel(run.run_id, "")
    assert again.value.message == (f'evolution run "{run.run_id}" has already ended (cancelled); only unfinished '
                                   "runs can be cancelled")
    assert (again.value.reason, again.value.metadata) == ("RUN_ENDED", {"run_id": run.run_id, "state": "cancelled"})
    with pytest.raises(NotFound) as missing:
        await held.service.cancel("evo_nope", "")
    assert (missing.value.reason, missing.value.metadata) == ("RUN_NOT_FOUND", {"run_id": "evo_nope"})


async def test_list_pages_newest_first_and_filters(held: World) -> None:
    ids = [(await held.service.start(request(agent))).run_id for agent in ("doubler", "tripler", "doubler")]
    first = await held.service.list(ListQuery(page_size=2))
    second = await held.service.list(ListQuery(page_size=2, after=first.after))
    assert [r.run_id for r in [*first.items, *second.items]] == ids[::-1]
    assert second.after is None
    mine = await held.service.list(ListQuery(agent_id="agent_tripler0000"))
    assert [r.run_id for r in mine.items] == [ids[1]]


async def test_get_unknown_run_is_not_found_and_watch_rejects_negative_sequences(world: World) -> None:
    with pytest.raises(NotFound) as caught:
        await world.service.get("evo_nope")
    assert (caught.value.reason, caught.value.message, caught.value.metadata) == (
        "RUN_NOT_FOUND", 'unknown evolution run "evo_nope"', {"run_id": "evo_nope"})
    with pytest.raises(InvalidArgument) as negative:
        [e async for e in world.service.watch("evo_nope", -1)]
    assert (negative.value.reason, violations(negative.value)) == (
        "INVALID_FIELD", [("after_sequence", "must not be negative")])
    with pytest.raises(NotFound) as missing:
        [e async for e in world.service.watch("evo_nope", 0)]
    assert missing.value.reason == "RUN_NOT_FOUND"


async def _drain(events: AsyncIterator[object]) -> list[object]:
    return [e async for e in events]


@pytest.mark.parametrize("call", [
    lambda s: s.get(""), lambda s: s.cancel("", "why"), lambda s: _drain(s.watch("", 0)),
], ids=["get", "cancel", "watch"])
async def test_an_empty_run_id_is_field_required_not_a_lookup(
        world: World, call: Callable[[EvolutionService], Awaitable[object]]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await call(world.service)
    assert (caught.value.reason, violations(caught.value), caught.value.message) == (
        "FIELD_REQUIRED", [("run_id", "is required")], "run_id: is required")


class RegistryWithAnEarlierPromotion(FakeRegistry):
    """Has already registered this run's promotion once, with other labels (a crash after it, then a resume)."""

    async def register_version(self, source: AgentSource, code: str, *, labels: Mapping[str, str],
                               request_id: str) -> AgentSource:
        if request_id.endswith("-promotion") and request_id not in self._requests:
            await super().register_version(source, code, labels={**labels, "evolution_report": "earlier"},
                                           request_id=request_id)
        return await super().register_version(source, code, labels=labels, request_id=request_id)


async def test_a_replayed_promotion_keeps_the_first_registration_instead_of_failing() -> None:
    world = World(InProcessRunner())
    world.registry = RegistryWithAnEarlierPromotion([SEED, TRIPLER])
    world.executor = RunExecutor(world.repo, world.registry, world.runner, world.notifier, owner="replica-1",
                                 settings=ExecutorSettings(lease_seconds=30.0, evaluation_parallelism=2))
    world.service = EvolutionService(world.repo, world.registry, world.executor, world.notifier, EvolutionConfig(),
                                     model_available=False, watch_poll_seconds=0.05)
    world.executor.start()
    try:
        run = await world.service.start(request(agent="tripler", overrides=replace(SMALL, generations=6)))
        await world.finished(run.run_id)
        done = await world.service.get(run.run_id, include_code=False)
    finally:
        await world.executor.stop()
    assert done.promotion is not None and done.promotion.promoted, done.promotion
    promoted = [version for version, _, _ in world.registry.registered]
    assert len(promoted) == 1  # the earlier registration only: the replay did not add a second version
    assert done.promotion.version == promoted[0].version
