"""Evolution policies (pure): what a policy holds, which numbers are possible, when a trigger fires, and the
per-day budget each automatic run reserves before it starts.

The policy lives in the evolution service (not the registry) because this service starts the runs: the
policy row, the decision to trigger and the run it starts are in one schema, so a restart or a second replica
can never lose a run or start it twice (the run's request id is derived from the policy's run counter).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from evolution_svc.domain import ConfigOverrides, EvolutionRun
from tdev_common.errors import FieldViolation, invalid_fields

DEFAULT_WINDOW_SECONDS = 3600.0
DEFAULT_MIN_EXECUTIONS = 10
DEFAULT_HELD_OUT_FRACTION = 0.3
DEFAULT_CANARY_FRACTION = 0.2
DEFAULT_DAILY_EVALUATIONS = 2000
DEFAULT_DAILY_COST_USD = 1.0
MIN_SCHEDULE_SECONDS = 1.0


class Phase(enum.Enum):
    """Where a policy's loop is."""

    WATCHING = "watching"
    EVOLVING = "evolving"
    ROLLING_OUT = "rolling_out"
    WAITING_FOR_BUDGET = "waiting_for_budget"
    DISABLED = "disabled"


@dataclass(frozen=True)
class PolicyTrigger:
    """What starts a run; a trigger at 0 is off."""

    failure_rate_threshold: float = 0.0
    window_seconds: float = 0.0
    min_executions: int = 0
    labelled_failures: int = 0
    schedule_interval_seconds: float = 0.0

    @property
    def window(self) -> timedelta:
        """The failure-rate window (default one hour)."""
        return timedelta(seconds=self.window_seconds or DEFAULT_WINDOW_SECONDS)

    @property
    def executions_needed(self) -> int:
        """Executions in the window before the failure rate counts."""
        return self.min_executions or DEFAULT_MIN_EXECUTIONS


@dataclass(frozen=True)
class PolicyBudget:
    """Per UTC day limits; 0 takes the default."""

    max_evaluations_per_day: int = 0
    max_cost_usd_per_day: float = 0.0

    @property
    def evaluations(self) -> int:
        """Evaluations allowed per day."""
        return self.max_evaluations_per_day or DEFAULT_DAILY_EVALUATIONS

    @property
    def cost_usd(self) -> float:
        """LLM spend allowed per day."""
        return self.max_cost_usd_per_day or DEFAULT_DAILY_COST_USD


@dataclass(frozen=True)
class PolicyStatus:
    """What the loop is doing; ``reserved_*`` is what the active run may still use of today's budget."""

    phase: Phase = Phase.WATCHING
    message: str = "watching the triggers"
    active_run_id: str = ""
    canary_version: str = ""
    runs_started: int = 0
    last_trigger_time: datetime | None = None
    last_trigger_reason: str = ""
    last_outcome: str = ""
    budget_day: str = ""
    evaluations_used: int = 0
    cost_used_usd: float = 0.0
    reserved_evaluations: int = 0
    reserved_cost_usd: float = 0.0
    labels_seen_until: datetime | None = None
    # When the last automatic run or rollout ended: the failure rate counts only executions after it, so a run
    # that found nothing (or a rolled-back canary) is not followed at once by another on the same evidence.
    evidence_since: datetime | None = None


@dataclass(frozen=True)
class EvolutionPolicy:
    """One agent's policy."""

    agent_id: str
    enabled: bool = True
    trigger: PolicyTrigger = field(default_factory=PolicyTrigger)
    budget: PolicyBudget = field(default_factory=PolicyBudget)
    overrides: ConfigOverrides = field(default_factory=ConfigOverrides)
    held_out_fraction: float = 0.0
    canary_traffic_fraction: float = 0.0
    canary_min_sample: int = 0
    status: PolicyStatus = field(default_factory=PolicyStatus)
    create_time: datetime | None = None
    update_time: datetime | None = None

    @property
    def held_out(self) -> float:
        """Share of each kind of case held out for the gate."""
        return self.held_out_fraction or DEFAULT_HELD_OUT_FRACTION

    @property
    def canary_fraction(self) -> float:
        """Share of stable's executions the canary gets."""
        return self.canary_traffic_fraction or DEFAULT_CANARY_FRACTION


def validate_policy(policy: EvolutionPolicy) -> EvolutionPolicy:
    """Checks every number of a policy at once.

    Raises:
        InvalidArgument: one field violation per impossible value.
    """
    problems: list[FieldViolation] = []

    def check(ok: bool, path: str, description: str) -> None:
        if not ok:
            problems.append(FieldViolation(path, description))

    trigger, budget = policy.trigger, policy.budget
    check(bool(policy.agent_id), "policy.agent_id", "is required")
    check(_finite(trigger.failure_rate_threshold) and 0 <= trigger.failure_rate_threshold < 1,
          "policy.trigger.failure_rate_threshold", f"must be in [0, 1), got {trigger.failure_rate_threshold}")
    check(_finite(trigger.window_seconds) and trigger.window_seconds >= 0, "policy.trigger.window_seconds",
          f"must be a number of seconds >= 0, got {trigger.window_seconds}")
    check(trigger.min_executions >= 0, "policy.trigger.min_executions",
          f"must not be negative, got {trigger.min_executions}")
    check(trigger.labelled_failures >= 0, "policy.trigger.labelled_failures",
          f"must not be negative, got {trigger.labelled_failures}")
    check(_finite(trigger.schedule_interval_seconds)
          and (trigger.schedule_interval_seconds == 0 or trigger.schedule_interval_seconds >= MIN_SCHEDULE_SECONDS),
          "policy.trigger.schedule_interval_seconds",
          f"must be 0 (off) or at least {MIN_SCHEDULE_SECONDS:g} s, got {trigger.schedule_interval_seconds}")
    check(trigger.failure_rate_threshold > 0 or trigger.labelled_failures > 0 or trigger.schedule_interval_seconds > 0,
          "policy.trigger", "set at least one trigger: failure_rate_threshold, labelled_failures or "
          "schedule_interval_seconds")
    check(budget.max_evaluations_per_day >= 0, "policy.budget.max_evaluations_per_day",
          f"must not be negative, got {budget.max_evaluations_per_day}")
    check(_finite(budget.max_cost_usd_per_day) and budget.max_cost_usd_per_day >= 0,
          "policy.budget.max_cost_usd_per_day", f"must be a number >= 0, got {budget.max_cost_usd_per_day}")
    check(_finite(policy.held_out_fraction) and 0 <= policy.held_out_fraction < 1, "policy.held_out_fraction",
          f"must be in [0, 1), got {policy.held_out_fraction}")
    check(_finite(policy.canary_traffic_fraction) and 0 <= policy.canary_traffic_fraction <= 1,
          "policy.canary_traffic_fraction", f"must be in [0, 1], got {policy.canary_traffic_fraction}")
    check(policy.canary_min_sample >= 0, "policy.canary_min_sample",
          f"must not be negative, got {policy.canary_min_sample}")
    if problems:
        raise invalid_fields(problems)
    return policy


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


# -- triggers -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observations:
    """What the loop read from the registry about the current version."""

    version: str
    executions: int
    success_rate: float
    new_labelled_failures: int


def trigger_reason(policy: EvolutionPolicy, seen: Observations, now: datetime) -> str | None:
    """Why a run should start now, or None; the first trigger that fires names itself."""
    trigger = policy.trigger
    if trigger.failure_rate_threshold > 0 and seen.executions >= trigger.executions_needed:
        failure_rate = 1.0 - seen.success_rate
        if failure_rate > trigger.failure_rate_threshold:
            failed = round(failure_rate * seen.executions)
            return (f"failure rate {failure_rate:.0%} of version {seen.version} over the last "
                    f"{trigger.window.total_seconds():g} s ({failed} of {seen.executions} executions) is above "
                    f"{trigger.failure_rate_threshold:.0%}")
    if trigger.labelled_failures > 0 and seen.new_labelled_failures >= trigger.labelled_failures:
        return (f"{seen.new_labelled_failures} newly labelled cases that version {seen.version} gets wrong "
                f"(trigger at {trigger.labelled_failures})")
    if trigger.schedule_interval_seconds > 0:
        last = policy.status.last_trigger_time
        if last is None or now - last >= timedelta(seconds=trigger.schedule_interval_seconds):
            return f"scheduled every {trigger.schedule_interval_seconds:g} s"
    return None


# -- budget ---------------------------------------------------------------------------------------------------
def utc_day(now: datetime) -> str:
    """The budget window a time falls in."""
    return now.astimezone(UTC).date().isoformat()


def next_reset(now: datetime) -> datetime:
    """When the budget window after ``now`` begins."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def current_usage(status: PolicyStatus, now: datetime) -> PolicyStatus:
    """The status with yesterday's usage cleared (a reservation of a run still going moves to today)."""
    if status.budget_day == utc_day(now):
        return status
    return replace(status, budget_day=utc_day(now), evaluations_used=status.reserved_evaluations,
                   cost_used_usd=status.reserved_cost_usd)


@dataclass(frozen=True)
class Reservation:
    """What an automatic run may use, reserved from today's budget before it starts."""

    evaluations: int
    cost_usd: float


def reserve(policy: EvolutionPolicy, wanted: Reservation, now: datetime) -> Reservation | None:
    """The largest reservation up to ``wanted`` that today's budget still allows; None when none is left (no
    evaluation left: a run could not even measure its seed)."""
    status = current_usage(policy.status, now)
    evaluations = min(wanted.evaluations, policy.budget.evaluations - status.evaluations_used)
    cost = min(wanted.cost_usd, max(0.0, policy.budget.cost_usd - status.cost_used_usd))
    if evaluations < 2:
        return None
    return Reservation(evaluations, cost)


def budget_exhausted_message(policy: EvolutionPolicy, now: datetime) -> str:
    """Why the loop waits, with when it can go on."""
    status = current_usage(policy.status, now)
    return (f"RESOURCE_EXHAUSTED: today's budget is used up ({status.evaluations_used} of "
            f"{policy.budget.evaluations} evaluations, ${status.cost_used_usd:.4f} of ${policy.budget.cost_usd:g}); "
            f"the policy waits for the next window at {next_reset(now).isoformat()}")


def settle(status: PolicyStatus, run: EvolutionRun, now: datetime) -> PolicyStatus:
    """Replaces the finished run's reservation by what it really used."""
    status = current_usage(status, now)
    # A run that ended before its first generation used one evaluation if it measured its seed (best is set then).
    used_evaluations = run.generations[-1].total_evaluations if run.generations else (1 if run.best is not None else 0)
    used_cost = sum(report.cost_usd for report in run.generations)
    return replace(
        status,
        evaluations_used=max(0, status.evaluations_used - status.reserved_evaluations + used_evaluations),
        cost_used_usd=max(0.0, status.cost_used_usd - status.reserved_cost_usd + used_cost),
        reserved_evaluations=0,
        reserved_cost_usd=0.0,
    )


def automatic_request_id(agent_id: str, run_number: int) -> str:
    """The idempotency key of a policy's n-th automatic run: a replica that crashed after starting it, or a
    second replica deciding at the same time, gets the same run back instead of a second one."""
    return f"policy:{agent_id}:{run_number}"
