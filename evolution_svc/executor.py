"""Runs evolution runs to their end: claims (and resumes) runs under a lease, drives the controller one
generation at a time, checkpoints each generation with its event, decides the promotion.

A step may run twice (a generation cut short by a crash is redone from the last checkpoint), its result
is recorded once: every write is fenced by the lease, so a worker that lost its run cannot write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from evolution_svc import codec, programs
from evolution_svc.budgets import Stop, stop_decision
from evolution_svc.controller import Controller, EngineSettings
from evolution_svc.domain import (
    AgentSource,
    EvaluationCase,
    EvaluationSuite,
    Event,
    EventType,
    EvolutionRun,
    Promotion,
    RunState,
    ScoringMode,
    StopReason,
)
from evolution_svc.evaluator import Evaluator
from evolution_svc.fitness import fitness
from evolution_svc.population import EngineState
from evolution_svc.ports import (
    CandidateRunner,
    EventDraft,
    Lease,
    LostLease,
    MeasurementCache,
    ModelClient,
    Registry,
    RunRepository,
    RunUpdate,
    WorkItem,
)
from evolution_svc.promotion import Evidence, decide, labels
from tdev_common.clock import utc_now
from tdev_common.errors import DomainError, InvalidArgument, Unavailable
from tdev_common.event_stream import EventHub
from tdev_common.idempotency import REQUEST_ID_REUSED
from tdev_common.tasks import watch

log = structlog.get_logger(__name__)

ModelFactory = Callable[[str, float], ModelClient]
REGISTER_ATTEMPTS = 3


@dataclass(frozen=True)
class ExecutorSettings:
    """How this replica works on runs."""

    lease_seconds: float = 15.0
    claim_interval_seconds: float = 2.0
    max_concurrent_runs: int = 4
    evaluation_parallelism: int = 8
    engine: EngineSettings = field(default_factory=EngineSettings)


class RunExecutor:
    """Owns the background tasks of the runs this replica works on."""

    def __init__(
        self,
        repository: RunRepository,
        registry: Registry,
        runner: CandidateRunner,
        notifier: EventHub[Event],
        *,
        owner: str,
        reclaim_own: bool = False,
        cache: MeasurementCache | None = None,
        model_factory: ModelFactory | None = None,
        settings: ExecutorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._registry = registry
        self._runner = runner
        self._notifier = notifier
        self._owner = owner
        self._cache = cache
        self._model_factory = model_factory
        self._settings = settings or ExecutorSettings()
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, Lease] = {}
        self._claimer: asyncio.Task[None] | None = None
        # Leases held under this (stable) name before a restart are taken back once, at the first claim; later
        # ones are this process's own and are renewed, never claimed again.
        self._reclaim_own = reclaim_own

    @property
    def owner(self) -> str:
        """This replica's lease owner id."""
        return self._owner

    def lease_until(self) -> datetime:
        """When a lease taken now expires."""
        return utc_now() + timedelta(seconds=self._settings.lease_seconds)

    def start(self) -> None:
        """Starts looking for runs to resume (runs whose lease expired: their worker died)."""
        if self._claimer is None:
            self._claimer = watch(asyncio.create_task(self._claim_loop(), name="evolution-claim"),
                                  event="evolution_loop_failed", loop="evolution-claim")

    async def stop(self) -> None:
        """Stops every run task and gives their leases up: the runs stay unfinished and the next replica to
        look (or this service after a restart) resumes them from their last checkpoint at once."""
        leases = list(self._leases.values())
        tasks = [task for task in (self._claimer, *self._tasks.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lease in leases:
            try:
                await self._repository.release(lease)
            except Exception:
                log.warning("evolution_lease_release_failed", run_id=lease.run_id, exc_info=True)
        self._tasks.clear()
        self._leases.clear()
        self._claimer = None

    def submit(self, lease: Lease) -> None:
        """Works on a run this replica holds the lease of."""
        if lease.run_id in self._tasks:
            return
        task = watch(asyncio.create_task(self._drive(lease), name=f"evolution-{lease.run_id}"),
                     event="evolution_drive_failed", expected=(LostLease,), run_id=lease.run_id)
        self._tasks[lease.run_id] = task
        self._leases[lease.run_id] = lease

        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(lease.run_id, None)
            self._leases.pop(lease.run_id, None)

        task.add_done_callback(forget)

    def abort(self, run_id: str) -> None:
        """Stops work on a run at once (it was cancelled)."""
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    async def wait_idle(self) -> None:
        """Waits until no run task is left (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _claim_loop(self) -> None:
        while True:
            free = self._settings.max_concurrent_runs - len(self._tasks)
            if free > 0:
                try:
                    # Never the runs worked on here: after an outage longer than the lease their lease has
                    # expired, but a new attempt would fence out the live work (the heartbeat renews it).
                    leases = await self._repository.claim(
                        self._owner, self.lease_until(), utc_now(), free,
                        reclaim_own=self._reclaim_own, exclude=list(self._tasks),
                    )
                    self._reclaim_own = False
                except Exception:
                    log.exception("evolution_claim_failed")
                    leases = []
                for lease in leases:
                    log.info("evolution_run_claimed", run_id=lease.run_id, attempt=lease.attempt)
                    self.submit(lease)
            await asyncio.sleep(self._settings.claim_interval_seconds)

    async def _heartbeat(self, lease: Lease, work: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            try:
                await self._repository.renew(lease, self.lease_until())
            except LostLease:
                log.info("evolution_lease_lost", run_id=lease.run_id)
                work.cancel()
                return
            except Exception:
                log.warning("evolution_lease_renew_failed", run_id=lease.run_id, exc_info=True)

    async def _drive(self, lease: Lease) -> None:
        # The task was created inside the StartEvolution call: its request id is not this work's.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(run_id=lease.run_id)
        current = asyncio.current_task()
        assert current is not None
        # Cancelled in the finally below and never awaited: its failure is retrieved and logged by watch.
        heartbeat = watch(asyncio.create_task(self._heartbeat(lease, current)), event="evolution_heartbeat_failed",
                          run_id=lease.run_id)
        try:
            await self._execute(lease)
        except LostLease:
            log.info("evolution_run_left", run_id=lease.run_id, reason="lease lost or run finished elsewhere")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            message = error.message if isinstance(error, DomainError) else f"{type(error).__name__}: {error}"
            log.error("evolution_run_failed", run_id=lease.run_id, error=message, exc_info=error)
            try:
                await self._append(
                    lease,
                    EventDraft(EventType.RUN_FAILED, message=message, stop_reason=StopReason.ERROR),
                    RunUpdate(state=RunState.FAILED, stop_reason=StopReason.ERROR, stop_message=message,
                              error=message),
                )
            except LostLease:
                pass
        finally:
            heartbeat.cancel()

    async def _append(self, lease: Lease, draft: EventDraft, update: RunUpdate) -> None:
        await self._repository.append(lease, draft, update)
        self._notifier.announce(lease.run_id)

    def _evaluator(self, suite: EvaluationSuite, cases: Sequence[EvaluationCase], scorer_code: str) -> Evaluator:
        return Evaluator(
            self._runner, suite, cases, cache=self._cache, scorer_code=scorer_code,
            parallelism=self._settings.evaluation_parallelism,
        )

    async def _execute(self, lease: Lease) -> None:
        work = await self._repository.load_work(lease.run_id)
        run = work.run
        config = run.config
        scorer_code = ""
        if run.suite.scoring_mode is ScoringMode.SCORER_AGENT:
            scorer = await self._registry.get_agent(run.suite.scorer_agent_id, run.suite.scorer_agent_version)
            scorer_code = scorer.code
        model = None
        if config.uses_llm:
            if self._model_factory is None:
                raise Unavailable("the run uses LLM operators but no LLM layer is configured",
                                  reason="LLM_NOT_CONFIGURED")
            model = self._model_factory(run.run_id, config.max_cost_usd)
        controller = Controller(
            config,
            self._evaluator(run.suite, run.suite.training, scorer_code),
            model=model,
            settings=self._settings.engine,
            clock=self._clock,
        )
        state = await self._begin(lease, work, controller)
        while (stop := stop_decision(state, config)) is None:
            state, report = await controller.step(state)
            await self._append(
                lease,
                EventDraft(EventType.GENERATION_COMPLETED, report=report),
                RunUpdate(
                    best_json=codec.candidate_to_json(state.best),
                    checkpoint=codec.encode_state(state),
                    checkpoint_generation=state.generation,
                    candidates=state.born,
                ),
            )
            log.info("evolution_generation", run_id=run.run_id, generation=report.generation,
                     best=report.best_fitness, evaluations=report.total_evaluations)
        promotion = run.promotion or await self._promote(run, work, state, stop, scorer_code)
        if run.promotion is None:
            await self._append(
                lease,
                EventDraft(EventType.PROMOTION_DECIDED, promotion=promotion, message=promotion.reason),
                RunUpdate(promotion=promotion),
            )
        await self._append(
            lease,
            EventDraft(EventType.RUN_SUCCEEDED, message=stop.message, stop_reason=stop.reason),
            RunUpdate(state=RunState.SUCCEEDED, stop_reason=stop.reason, stop_message=stop.message),
        )
        log.info("evolution_run_succeeded", run_id=run.run_id, stop=stop.reason.value, best=state.best.fitness)

    async def _begin(self, lease: Lease, work: WorkItem, controller: Controller) -> EngineState:
        if work.checkpoint is not None:
            state = codec.decode_state(work.checkpoint)
            await self._append(
                lease,
                EventDraft(EventType.RUN_RESUMED,
                           message=f"resumed from the checkpoint of generation {state.generation}"),
                RunUpdate(state=RunState.RUNNING),
            )
            return state
        try:
            state = await controller.start(work.seed_code)
        except programs.InvalidProgram as error:
            raise Unavailable(f"the agent's code cannot be evolved: {error}", reason="INVALID_SEED_CODE") from error
        seed = state.seed
        await self._append(
            lease,
            EventDraft(
                EventType.RUN_STARTED,
                message=f"seed program measured: fitness {seed.fitness:.4f}, correctness {seed.correctness:.4f}",
            ),
            RunUpdate(
                state=RunState.RUNNING,
                seed_fitness=seed.fitness,
                best_json=codec.candidate_to_json(seed),
                checkpoint=codec.encode_state(state),
                checkpoint_generation=0,
                candidates=state.born,
            ),
        )
        return state

    async def _promote(
        self, run: EvolutionRun, work: WorkItem, state: EngineState, stop: Stop, scorer_code: str
    ) -> Promotion:
        """Measures the original and the best on the held-out cases and registers the best if it wins."""
        held_out = run.suite.held_out
        cases = held_out or run.suite.training
        evaluator = self._evaluator(run.suite, cases, scorer_code)
        basis = replace(state.basis, weights=tuple(case.weight for case in cases))
        seed, best = state.seed, state.best
        baseline = fitness((await evaluator.measure(work.seed_code, state.limits)).measurement, seed.size, basis)[0]
        best_score = (
            baseline
            if best.code_hash == seed.code_hash
            else fitness((await evaluator.measure(best.code, state.limits)).measurement, best.size, basis)[0]
        )
        evidence = Evidence(
            baseline=baseline,
            best=best_score,
            margin=run.config.promotion_margin,
            best_is_seed=best.ast_hash == seed.ast_hash,
            enabled=run.config.promote,
            held_out_cases=len(held_out),
        )
        decision = decide(evidence)
        result = Promotion(
            promoted=False, reason=decision.reason, baseline_held_out_fitness=baseline,
            best_held_out_fitness=best_score,
        )
        if not decision.promote:
            return result
        original = AgentSource(run.agent_id, run.agent_name, run.agent_version, work.seed_code)
        try:
            original = await self._registry.get_agent(run.agent_id, run.agent_version)
        except DomainError:
            log.warning("evolution_original_unavailable", run_id=run.run_id)
        stored = await self._repository.get(run.run_id, include_code=False)
        last = stored.generations[-1] if stored is not None and stored.generations else None
        tags = labels(run.run_id, best, seed, last, evidence, stop.message)
        request_id = f"{run.run_id}-promotion"
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                registered = await self._registry.register_version(
                    original, best.code, labels=tags, request_id=request_id
                )
            except InvalidArgument as error:
                if error.reason != REQUEST_ID_REUSED or not request_id:
                    return replace(result, reason=f"{decision.reason}; but the registry refused it: {error.message}")
                # A resumed run promoting the same code with freshly measured labels: the first registration
                # stands. Registering the same code again without the key returns that version (idempotent
                # by name and code) instead of refusing the reused key; this try does not count.
                log.info("evolution_promotion_replayed", run_id=run.run_id)
                request_id = ""
                try:
                    registered = await self._registry.register_version(original, best.code, labels=tags,
                                                                       request_id="")
                except DomainError as again:
                    return replace(result, reason=f"{decision.reason}; but the registry refused it: {again.message}")
                return replace(result, promoted=True, agent_id=registered.agent_id, version=registered.version)
            except Unavailable as error:
                if attempt == REGISTER_ATTEMPTS:
                    return replace(result, reason=f"{decision.reason}; but the registry is unavailable: {error}")
                await asyncio.sleep(0.5 * attempt)
            except DomainError as error:
                return replace(result, reason=f"{decision.reason}; but the registry refused it: {error.message}")
            else:
                return replace(result, promoted=True, agent_id=registered.agent_id, version=registered.version)
        return result
