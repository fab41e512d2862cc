"""The self-improvement loop: evolution policies watch production through the registry, start automatic runs on
suites made of captured cases, and put a winner on the "canary" alias for the registry to promote or roll back.

Every replica runs the loop; a policy is worked on by one replica at a time (a lease on its row), and each
automatic run's request id is derived from the policy's run counter, so a crash between starting a run and
saving the policy's status is repaired on the next tick (the run is found by that id and adopted), never
started twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from evolution_svc import policies
from evolution_svc.domain import EvaluationSuite, EvolutionRun, StartRequest, StopReason
from evolution_svc.policies import EvolutionPolicy, Observations, Phase, PolicyStatus, Reservation
from evolution_svc.ports import PolicyRepository, ProductionRegistry
from evolution_svc.production_suite import (
    NothingToLearn,
    ProductionCase,
    describe,
    production_suite,
    wrong_labelled,
)
from evolution_svc.service import EvolutionService
from tdev_common.clock import utc_now
from tdev_common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    require,
)
from tdev_common.paging import Page

log = structlog.get_logger(__name__)
STABLE = "stable"
CANARY = "canary"
BUSY = (Phase.EVOLVING, Phase.ROLLING_OUT)
BUDGET_STOPS = (StopReason.EVALUATION_BUDGET, StopReason.COST_BUDGET)


@dataclass(frozen=True)
class PolicySettings:
    """How often the loop looks and how long a replica holds a policy."""

    policy_interval_seconds: float = 5.0
    policy_lease_seconds: float = 30.0
    policies_per_tick: int = 50


class BudgetExhausted(Exception):
    """Today's budget of a policy is used up."""


def _policy_not_found(agent_id: str) -> NotFound:
    return NotFound(f'agent "{agent_id}" has no evolution policy', reason="POLICY_NOT_FOUND",
                    metadata={"agent_id": agent_id})


class PolicyService:
    """Set, read and trigger policies, and advance each one a step per tick."""

    def __init__(
        self,
        repository: PolicyRepository,
        registry: ProductionRegistry,
        runs: EvolutionService,
        *,
        owner: str,
        settings: PolicySettings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._repository = repository
        self._registry = registry
        self._runs = runs
        self._owner = owner
        self._settings = settings or PolicySettings()
        self._clock = clock

    # -- the RPCs ---------------------------------------------------------------------------------------------
    async def set_policy(self, policy: EvolutionPolicy) -> EvolutionPolicy:
        """Creates or replaces a policy's settings.

        Raises:
            InvalidArgument: one violation per impossible number.
            NotFound: the agent is not in the registry.
        """
        policies.validate_policy(policy)
        self._runs.effective_config(StartRequest(policy.agent_id, "", EvaluationSuite(cases=()), policy.overrides))
        agent = await self._registry.get_agent(policy.agent_id, "")
        stored = await self._repository.put_policy(replace(policy, agent_id=agent.agent_id), self._clock())
        log.info("evolution_policy_set", agent_id=agent.agent_id, enabled=stored.enabled)
        return stored

    async def get_policy(self, agent_id: str) -> EvolutionPolicy:
        """One agent's policy.

        Raises:
            InvalidArgument: no agent_id.
            NotFound: no policy for the agent (POLICY_NOT_FOUND).
        """
        require("agent_id", agent_id)
        found = await self._repository.get_policy(agent_id)
        if found is None:
            raise _policy_not_found(agent_id)
        return found

    async def list_policies(self, after: str | None, size: int) -> Page[EvolutionPolicy]:
        """A page of policies by agent id."""
        return await self._repository.list_policies(after, size)

    async def delete_policy(self, agent_id: str) -> None:
        """Removes a policy.

        Raises:
            NotFound: no policy for the agent.
        """
        require("agent_id", agent_id)
        if not await self._repository.delete_policy(agent_id):
            raise _policy_not_found(agent_id)

    async def trigger(self, agent_id: str, reason: str) -> tuple[EvolutionPolicy, EvolutionRun]:
        """Starts the policy's automatic run now.

        Raises:
            NotFound: no policy for the agent.
            Aborted: another replica is working on the policy right now (retry).
            FailedPrecondition: a run or rollout is in progress, or nothing to learn from.
            ResourceExhausted: today's budget is used up.
        """
        policy = await self.get_policy(agent_id)
        now = self._clock()
        if not await self._repository.claim_policies(self._owner, now, self._lease_until(now), 1, agent_id=agent_id):
            raise Aborted(f'another replica is working on the policy of "{agent_id}"; retry in a few seconds',
                          reason="POLICY_BUSY")
        try:
            policy = await self.get_policy(agent_id)
            if policy.status.phase in BUSY:
                raise FailedPrecondition(
                    f'the policy of "{agent_id}" is {policy.status.phase.value} '
                    f"(run {policy.status.active_run_id}); at most one automatic run per agent at a time",
                    reason="POLICY_BUSY", metadata={"run_id": policy.status.active_run_id})
            try:
                adopted = await self._adopt(policy, policies.current_usage(policy.status, now))
                status, run = adopted or await self._start(policy, reason or "triggered by hand", now)
            except BudgetExhausted as error:
                await self._save(agent_id, replace(policies.current_usage(policy.status, now),
                                                   phase=Phase.WAITING_FOR_BUDGET, message=str(error)))
                raise ResourceExhausted(str(error), reason="POLICY_BUDGET_EXHAUSTED") from error
            except NothingToLearn as error:
                raise FailedPrecondition(f"nothing to evolve from: {error}", reason="NO_PRODUCTION_CASES") from error
            await self._save(agent_id, status)
            return replace(policy, status=status), run
        finally:
            await self._repository.release_policies(self._owner, [agent_id])

    # -- the loop ---------------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Claims the policies no other replica holds and advances each one step."""
        now = self._clock()
        claimed = await self._repository.claim_policies(self._owner, now, self._lease_until(now),
                                                        self._settings.policies_per_tick)
        for agent_id in claimed:
            try:
                await self._advance(agent_id)
            except DomainError as error:  # the registry away, a run gone: the next tick tries again
                log.warning("evolution_policy_step_failed", agent_id=agent_id, error=str(error))

    async def _advance(self, agent_id: str) -> None:
        policy = await self._repository.get_policy(agent_id)
        if policy is None:
            return
        now = self._clock()
        status = policies.current_usage(policy.status, now)
        if status.phase is Phase.EVOLVING:
            status = await self._follow_run(policy, status, now)
        elif status.phase is Phase.ROLLING_OUT:
            status = await self._follow_rollout(policy.agent_id, status, now)
        if status.phase not in BUSY:
            status = await self._watch(replace(policy, status=status), status, now)
        if status != policy.status:
            await self._save(agent_id, status)

    async def _watch(self, policy: EvolutionPolicy, status: PolicyStatus, now: datetime) -> PolicyStatus:
        if not policy.enabled:
            return replace(status, phase=Phase.DISABLED, message="the policy is disabled")
        adopted = await self._adopt(policy, status)
        if adopted is not None:
            return adopted[0]
        seen, cases = await self._observe(policy, status, now)
        reason = policies.trigger_reason(policy, seen, now)
        if reason is None:
            return replace(status, phase=Phase.WATCHING, message="watching the triggers")
        try:
            started, _ = await self._start(policy, reason, now, cases=cases, version=seen.version)
        except BudgetExhausted as error:
            return replace(status, phase=Phase.WAITING_FOR_BUDGET, message=str(error))
        except NothingToLearn as error:
            return replace(status, phase=Phase.WATCHING, message=f"{reason}, but nothing to evolve from: {error}")
        return started

    async def _observe(self, policy: EvolutionPolicy, status: PolicyStatus,
                       now: datetime) -> tuple[Observations, list[ProductionCase] | None]:
        version = await self._current_version(policy.agent_id)
        executions, success_rate = 0, 1.0
        if policy.trigger.failure_rate_threshold > 0:
            since = now - policy.trigger.window
            if status.evidence_since is not None:
                since = max(since, status.evidence_since)
            stats = await self._registry.execution_stats(policy.agent_id, version, since)
            executions, success_rate = stats.executions, stats.success_rate
        cases: list[ProductionCase] | None = None
        new_labelled = 0
        if policy.trigger.labelled_failures > 0:
            cases = await self._registry.list_cases(policy.agent_id)
            seen_until = status.labels_seen_until
            new_labelled = sum(1 for case in wrong_labelled(cases, version) if seen_until is None
                               or (case.label_time is not None and case.label_time > seen_until))
        return Observations(version, executions, success_rate, new_labelled), cases

    async def _current_version(self, agent_id: str) -> str:
        """The version production runs: the stable alias's, else the latest."""
        stable = (await self._registry.aliases(agent_id)).versions.get(STABLE)
        return stable or (await self._registry.get_agent(agent_id, "")).version

    async def _adopt(self, policy: EvolutionPolicy,
                     status: PolicyStatus) -> tuple[PolicyStatus, EvolutionRun] | None:
        """A run this policy started but did not record (a crash between the two), with the status that records
        it; None when there is none, so the next run may start."""
        number = status.runs_started + 1
        run = await self._repository.run_by_request_id(policies.automatic_request_id(policy.agent_id, number))
        if run is None:
            return None
        log.info("evolution_policy_run_adopted", agent_id=policy.agent_id, run_id=run.run_id)
        return self._evolving(status, run, number, run.create_time), run

    async def _start(self, policy: EvolutionPolicy, reason: str, now: datetime, *,
                     cases: list[ProductionCase] | None = None,
                     version: str | None = None) -> tuple[PolicyStatus, EvolutionRun]:
        """Builds the suite, reserves today's budget and starts the run (idempotent by the run counter; callers
        adopt an unrecorded run first)."""
        status = policies.current_usage(policy.status, now)
        number = status.runs_started + 1
        request_id = policies.automatic_request_id(policy.agent_id, number)
        version = version or await self._current_version(policy.agent_id)
        cases = cases if cases is not None else await self._registry.list_cases(policy.agent_id)
        suite = production_suite(cases, version, held_out_fraction=policy.held_out)
        wanted = self._runs.effective_config(StartRequest(policy.agent_id, version, suite, policy.overrides))
        reservation = policies.reserve(policy, Reservation(wanted.max_evaluations, wanted.max_cost_usd), now)
        if reservation is None:
            raise BudgetExhausted(policies.budget_exhausted_message(policy, now))
        overrides = replace(policy.overrides, max_evaluations=reservation.evaluations,
                            max_cost_usd=reservation.cost_usd, promote=True, seed=wanted.seed)
        run = await self._runs.start(StartRequest(
            agent=policy.agent_id, agent_version=version, suite=suite, overrides=overrides, request_id=request_id,
            automatic=True, start_reason=f"{reason}; suite from production: {describe(suite)}"))
        log.info("evolution_policy_run_started", agent_id=policy.agent_id, run_id=run.run_id, reason=reason)
        started = replace(status, last_trigger_reason=reason, labels_seen_until=now)
        return self._evolving(started, run, number, now), run

    @staticmethod
    def _evolving(status: PolicyStatus, run: EvolutionRun, number: int, when: datetime) -> PolicyStatus:
        """The status of a policy whose ``number``-th run is ``run``, its reservation counted as used."""
        evaluations, cost = run.config.max_evaluations, run.config.max_cost_usd
        return replace(
            status, phase=Phase.EVOLVING, message=f"evolving in run {run.run_id}", active_run_id=run.run_id,
            canary_version="", runs_started=number, last_trigger_time=when,
            last_trigger_reason=status.last_trigger_reason or run.start_reason,
            evaluations_used=status.evaluations_used + evaluations, cost_used_usd=status.cost_used_usd + cost,
            reserved_evaluations=evaluations, reserved_cost_usd=cost)

    async def _follow_run(self, policy: EvolutionPolicy, status: PolicyStatus, now: datetime) -> PolicyStatus:
        try:
            run = await self._runs.get(status.active_run_id, include_code=False)
        except NotFound:
            return replace(status, phase=Phase.WATCHING, active_run_id="", reserved_evaluations=0,
                           reserved_cost_usd=0.0, message=f"run {status.active_run_id} is gone")
        if not run.state.is_terminal:
            return status
        status = policies.settle(status, run, now)
        promotion = run.promotion
        if promotion is None or not promotion.promoted:
            why = promotion.reason if promotion is not None else run.error or run.stop_message
            outcome = f"run {run.run_id} ended ({run.stop_message or run.state.value}) without a new version: {why}"
            settled = replace(policy, status=status)
            if run.stop_reason in BUDGET_STOPS and policies.reserve(settled, Reservation(2, 0.0), now) is None:
                outcome = f"{policies.budget_exhausted_message(settled, now)}; {outcome}"
            return replace(status, phase=Phase.WATCHING, active_run_id="", last_outcome=outcome,
                           message="watching the triggers", evidence_since=now)
        aliases = await self._registry.aliases(policy.agent_id)
        if any(not ended.promoted and ended.version == promotion.version for ended in aliases.outcomes):
            return replace(status, phase=Phase.WATCHING, active_run_id="", evidence_since=now,
                           message="watching the triggers",
                           last_outcome=f"run {run.run_id} found version {promotion.version} again, which was rolled "
                                        "back before; it is not rolled out a second time")
        if STABLE not in aliases.versions:
            await self._registry.set_alias(policy.agent_id, STABLE, run.agent_version)
        if aliases.versions.get(CANARY) != promotion.version:
            await self._registry.set_alias(policy.agent_id, CANARY, promotion.version,
                                           traffic_fraction=policy.canary_fraction,
                                           min_sample=policy.canary_min_sample)
        log.info("evolution_policy_canary_set", agent_id=policy.agent_id, version=promotion.version,
                 fraction=policy.canary_fraction)
        return replace(status, phase=Phase.ROLLING_OUT, canary_version=promotion.version,
                       message=f"canary {promotion.version} takes {policy.canary_fraction:.0%} of stable's "
                               f"executions; the registry promotes or rolls it back on the numbers")

    async def _follow_rollout(self, agent_id: str, status: PolicyStatus, now: datetime) -> PolicyStatus:
        aliases = await self._registry.aliases(agent_id)
        if aliases.versions.get(CANARY) == status.canary_version:
            return status
        ended = next((outcome for outcome in aliases.outcomes if outcome.version == status.canary_version), None)
        if ended is None:
            outcome = f"canary {status.canary_version} was moved or removed by hand"
        elif ended.promoted:
            outcome = f"canary {status.canary_version} promoted to stable: {ended.message}"
        else:
            outcome = f"canary {status.canary_version} rolled back: {ended.message}"
        log.info("evolution_policy_rollout_ended", agent_id=agent_id, outcome=outcome)
        return replace(status, phase=Phase.WATCHING, active_run_id="", canary_version="", last_outcome=outcome,
                       message="watching the triggers", evidence_since=now)

    async def _save(self, agent_id: str, status: PolicyStatus) -> None:
        if not await self._repository.save_policy_status(agent_id, self._owner, status):
            log.warning("evolution_policy_lease_lost", agent_id=agent_id)

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._settings.policy_lease_seconds)


class PolicyLoop:
    """Runs :meth:`PolicyService.tick` every interval until stopped."""

    def __init__(self, service: PolicyService, interval_seconds: float) -> None:
        self._service = service
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the background loop."""
        self._task = asyncio.create_task(self._run(), name="evolution-policy-loop")

    async def stop(self) -> None:
        """Stops it (a tick in progress is cancelled; its leases expire)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._service.tick()
            except Exception:
                log.exception("evolution_policy_tick_failed")
            await asyncio.sleep(self._interval)


