"""Use-cases of the evolution service: start, watch, get, list and cancel runs, list a run's candidates."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import structlog

from evolution_svc.domain import (
    RUN_ID_PREFIX,
    Candidate,
    CandidateQuery,
    EvaluationSuite,
    Event,
    EvolutionConfig,
    EvolutionRun,
    ListQuery,
    OperatorSet,
    RunState,
    ScoringMode,
    StartRequest,
)
from evolution_svc.executor import RunExecutor
from evolution_svc.ports import Lease, NewRun, Registry, RunRepository
from evolution_svc.validation import INVALID_SUITE, split_held_out, validate_config, validate_suite
from tdev_common.clock import utc_now
from tdev_common.errors import (
    FIELD_REQUIRED,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    invalid_field,
    invalid_fields,
    require,
)
from tdev_common.event_stream import EventHub, stored_then_live
from tdev_common.paging import Page

log = structlog.get_logger(__name__)
WATCH_BATCH = 100
MAX_SEED = 2**62


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f'unknown evolution run "{run_id}"', reason="RUN_NOT_FOUND", metadata={"run_id": run_id})


def new_run_id() -> str:
    """A fresh run id, e.g. ``evo_1a2b3c4d5e6f``."""
    return RUN_ID_PREFIX + secrets.token_hex(6)


class EvolutionService:
    """The evolution use-cases over their ports."""

    def __init__(
        self,
        repository: RunRepository,
        registry: Registry,
        executor: RunExecutor,
        notifier: EventHub[Event],
        defaults: EvolutionConfig,
        *,
        model_available: bool,
        watch_poll_seconds: float = 1.0,
    ) -> None:
        self._repository = repository
        self._registry = registry
        self._executor = executor
        self._notifier = notifier
        self._defaults = defaults
        self._model_available = model_available
        self._poll = watch_poll_seconds

    def effective_config(self, request: StartRequest) -> EvolutionConfig:
        """The request's settings over the defaults, with the operators and seed resolved.

        Raises:
            InvalidArgument: naming the first bad field.
        """
        config = request.overrides.over(self._defaults)
        if config.operators is OperatorSet.UNSPECIFIED:
            config = replace(
                config, operators=OperatorSet.MIXED if self._model_available else OperatorSet.PROGRAM_TRANSFORM
            )
        if request.overrides.seed is None:
            config = replace(config, seed=secrets.randbelow(MAX_SEED))
        return validate_config(config)

    async def start(self, request: StartRequest) -> EvolutionRun:
        """Accepts a run and starts it in the background.

        Raises:
            InvalidArgument: no agent_id, an empty or malformed suite (naming the case) or bad settings, every
                problem of the three in one error; a request id used before for a different request
                (REQUEST_ID_REUSED).
            NotFound: the agent (or the scorer agent) is not in the registry.
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        suite, config = self._validated(request)
        suite = split_held_out(suite, config.seed)
        agent = await self._registry.get_agent(request.agent, request.agent_version)
        if suite.scoring_mode is ScoringMode.SCORER_AGENT:
            try:
                scorer = await self._registry.get_agent(suite.scorer_agent_id, suite.scorer_agent_version)
            except NotFound as error:
                raise NotFound(f"suite.scorer_agent_id: {error.message}", reason=error.reason,
                               metadata=error.metadata) from error
            # Pin the scorer's version so that a resumed run scores exactly as before.
            suite = replace(suite, scorer_agent_id=scorer.agent_id, scorer_agent_version=scorer.version)
        now = utc_now()
        run = EvolutionRun(
            run_id=new_run_id(),
            agent_id=agent.agent_id,
            agent_name=agent.name,
            agent_version=agent.version,
            suite=suite,
            config=config,
            state=RunState.PENDING,
            create_time=now,
            update_time=now,
            automatic=request.automatic,
            start_reason=request.start_reason,
        )
        stored, created = await self._repository.insert(
            NewRun(run=run, request_id=request.request_id, seed_code=agent.code, fingerprint=request.fingerprint),
            self._executor.owner,
            self._executor.lease_until(),
        )
        if created:
            log.info("evolution_run_accepted", run_id=run.run_id, agent_id=agent.agent_id,
                     version=agent.version, cases=len(suite.cases), seed=config.seed)
            self._executor.submit(Lease(stored.run_id, self._executor.owner, 1))
        return stored

    def _validated(self, request: StartRequest) -> tuple[EvaluationSuite, EvolutionConfig]:
        """The checked suite and effective config; every problem of agent_id, suite and config in one error."""
        violations: list[FieldViolation] = []
        reasons: list[str] = []
        if not request.agent:
            violations.append(FieldViolation("agent_id", "is required"))
            reasons.append(FIELD_REQUIRED)
        suite: EvaluationSuite | None = None
        config: EvolutionConfig | None = None
        try:
            suite = validate_suite(request.suite)
        except InvalidArgument as error:
            violations.extend(error.violations)
            reasons.append(error.reason)
        try:
            config = self.effective_config(request)
        except InvalidArgument as error:
            violations.extend(error.violations)
            reasons.append(error.reason)
        if violations or suite is None or config is None:
            # One reason for the whole answer: the first problem's, so a lone missing agent_id reads
            # FIELD_REQUIRED and a lone bad suite INVALID_SUITE; every problem is a field violation.
            raise invalid_fields(violations, reason=reasons[0] if reasons else INVALID_SUITE)
        return suite, config

    async def get(self, run_id: str, *, include_code: bool = True) -> EvolutionRun:
        """A run with its generation reports.

        Raises:
            InvalidArgument: no run_id (FIELD_REQUIRED).
            NotFound: no such run (RUN_NOT_FOUND).
        """
        require("run_id", run_id)
        run = await self._repository.get(run_id, include_code=include_code)
        if run is None:
            raise _run_not_found(run_id)
        return run

    async def list(self, query: ListQuery) -> Page[EvolutionRun]:
        """A page of runs, newest first."""
        return await self._repository.list_runs(query)

    async def list_candidates(self, query: CandidateQuery) -> Page[Candidate]:
        """A page of the candidates a run has evaluated, by generation then code hash.

        Raises:
            InvalidArgument: no run_id (FIELD_REQUIRED).
            NotFound: no such run (RUN_NOT_FOUND).
        """
        require("run_id", query.run_id)
        page = await self._repository.list_candidates(query)
        if page is None:
            raise _run_not_found(query.run_id)
        return page

    async def cancel(self, run_id: str, reason: str) -> EvolutionRun:
        """Cancels an unfinished run; its worker stops at once (or at its next write on another replica).

        Raises:
            InvalidArgument: no run_id (FIELD_REQUIRED).
            NotFound: no such run (RUN_NOT_FOUND).
            FailedPrecondition: the run has already ended (RUN_ENDED).
        """
        require("run_id", run_id)
        run, cancelled = await self._repository.cancel(run_id, reason)
        if run is None:
            raise _run_not_found(run_id)
        if not cancelled:
            raise FailedPrecondition(
                f'evolution run "{run_id}" has already ended ({run.state.value}); '
                "only unfinished runs can be cancelled",
                reason="RUN_ENDED", metadata={"run_id": run_id, "state": run.state.value},
            )
        self._executor.abort(run_id)
        self._notifier.announce(run_id)
        log.info("evolution_run_cancelled", run_id=run_id, reason=reason)
        return run

    async def watch(self, run_id: str, after_sequence: int) -> AsyncIterator[Event]:
        """Stored events after ``after_sequence``, then live ones, until the run's last event.

        Raises:
            NotFound: no such run.
            InvalidArgument: no run_id (FIELD_REQUIRED), a negative sequence.
        """
        require("run_id", run_id)
        if after_sequence < 0:
            raise invalid_field("after_sequence", "must not be negative")
        await self.get(run_id, include_code=False)

        async def read_after(last: int, limit: int) -> Sequence[Event]:
            return await self._repository.events_after(run_id, last, limit)

        async def ended(last: int) -> bool:
            run = await self.get(run_id, include_code=False)
            return run.state.is_terminal and run.last_sequence <= last

        async for event in stored_then_live(self._notifier, run_id, after_sequence, read_after=read_after,
                                            is_last=lambda event: event.type.is_terminal, ended=ended,
                                            poll_seconds=self._poll, page=WATCH_BATCH):
            yield event
