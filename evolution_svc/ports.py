"""The abstractions the engine and use-cases depend on: sandbox, cache, model, registry, repository."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from evolution_svc.domain import (
    AgentSource,
    Candidate,
    CandidateQuery,
    EvaluationLimits,
    Event,
    EventType,
    EvolutionRun,
    GenerationReport,
    JsonObject,
    JsonValue,
    ListQuery,
    Measurement,
    Promotion,
    RunState,
    StopReason,
)
from evolution_svc.policies import EvolutionPolicy, PolicyStatus
from evolution_svc.production_suite import ProductionCase
from tdev_common.paging import Page


@dataclass(frozen=True)
class CaseRun:
    """One execution of a program on one case's inputs, as the sandbox reported it."""

    ok: bool
    output: JsonValue = None
    duration_ms: float = 0.0
    error: str = ""


class CandidateRunner(Protocol):
    """Runs a program on many inputs in isolation (never in this process)."""

    async def run_cases(self, code: str, inputs: Sequence[JsonObject], limits: EvaluationLimits) -> list[CaseRun]:
        """One result per input, in order; a program that cannot load, or that runs out of its batch time,
        fails every case."""
        ...


class MeasurementCache(Protocol):
    """Measurements by key (suite digest + code hash), shared across runs and replicas."""

    async def get(self, key: str) -> Measurement | None:
        """The stored measurement, or None when absent or not trustworthy."""
        ...

    async def put(self, key: str, measurement: Measurement) -> None:
        """Stores a measurement."""
        ...


@dataclass(frozen=True)
class FailingCase:
    """A training case the parent fails, as shown to the model."""

    inputs: JsonObject
    expected: JsonObject
    got: str


@dataclass(frozen=True)
class ModelAnswer:
    """A model's answer: the new program (None when it could not be used) and what the call cost."""

    code: str | None
    cost_usd: float


class ModelClient(Protocol):
    """The LLM layer as the evolution operators need it (prompts and answer shapes are the adapter's)."""

    @property
    def is_model(self) -> bool:
        """False when only the offline provider (not a model) is configured."""
        ...

    async def mutate(
        self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int
    ) -> ModelAnswer:
        """A diff edit of ``code`` that should pass more cases; raises ModelError on failure."""
        ...

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        """``code`` edited with what ``other_code`` does better; raises ModelError on failure."""
        ...


class ModelError(Exception):
    """A model call failed (provider down, budget exhausted, unusable answer); the operator is skipped."""

    def __init__(self, message: str, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.cost_usd = cost_usd


class Registry(Protocol):
    """The registry service, reached over gRPC."""

    async def get_agent(self, agent: str, version: str) -> AgentSource:
        """An agent version by id (or name); the latest when ``version`` is empty; raises NotFound."""
        ...

    async def register_version(
        self,
        source: AgentSource,
        code: str,
        *,
        labels: Mapping[str, str],
        request_id: str,
    ) -> AgentSource:
        """Registers ``code`` as a new version of ``source``'s agent with ``source`` as its parent."""
        ...


@dataclass(frozen=True)
class RolloutOutcome:
    """How one canary rollout ended, as the registry recorded it."""

    version: str
    promoted: bool
    message: str


@dataclass(frozen=True)
class AliasState:
    """An agent's aliases (name -> version) and its finished rollouts, newest first."""

    versions: Mapping[str, str]
    outcomes: tuple[RolloutOutcome, ...] = ()


@dataclass(frozen=True)
class ExecutionStats:
    """One version's executions over a window."""

    version: str
    executions: int
    success_rate: float


class ProductionRegistry(Registry, Protocol):
    """The registry as the policy loop also needs it: captured cases, execution numbers and aliases."""

    async def list_cases(self, agent_id: str) -> list[ProductionCase]:
        """Every captured case of the agent (every version), up to a bound."""
        ...

    async def execution_stats(self, agent_id: str, version: str, since: datetime) -> ExecutionStats:
        """Executions of one version finished since ``since``."""
        ...

    async def aliases(self, agent_id: str) -> AliasState:
        """The agent's aliases and finished rollouts."""
        ...

    async def set_alias(self, agent_id: str, alias: str, version: str, *, traffic_fraction: float = 0.0,
                        min_sample: int = 0) -> None:
        """Points an alias at a version (a canary with its share and sample size)."""
        ...


class LostLease(Exception):
    """A fenced write was rejected: another worker owns the run now, or it was cancelled."""


@dataclass(frozen=True)
class Lease:
    """The right to work on a run: every write is fenced by (owner, attempt)."""

    run_id: str
    owner: str
    attempt: int


@dataclass(frozen=True)
class NewRun:
    """A run to insert."""

    run: EvolutionRun
    request_id: str
    seed_code: str
    # What the request was (tdev_common.idempotency.fingerprint): a replayed request_id must come with the same one.
    fingerprint: str = ""


@dataclass(frozen=True)
class EventDraft:
    """An event to append (the repository assigns its sequence and time)."""

    type: EventType
    report: GenerationReport | None = None
    promotion: Promotion | None = None
    message: str = ""
    stop_reason: StopReason = StopReason.UNSPECIFIED


@dataclass(frozen=True)
class RunUpdate:
    """Fields of a run changed together with an appended event; None leaves a field as it is."""

    state: RunState | None = None
    stop_reason: StopReason | None = None
    stop_message: str | None = None
    seed_fitness: float | None = None
    best_json: JsonObject | None = None
    promotion: Promotion | None = None
    error: str | None = None
    checkpoint: bytes | None = None
    checkpoint_generation: int | None = None
    # Candidates first evaluated in the step this update records (stored once per run and code hash).
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class WorkItem:
    """What a worker needs to (re)start a run."""

    run: EvolutionRun
    seed_code: str
    checkpoint: bytes | None


class RunRepository(Protocol):
    """Reads and writes the evolution schema; returns domain objects."""

    async def insert(self, new: NewRun, owner: str, lease_until: datetime) -> tuple[EvolutionRun, bool]:
        """Stores a run owned by ``owner`` (attempt 1); for a replayed request_id returns the first run and
        False."""
        ...

    async def get(self, run_id: str, *, include_code: bool) -> EvolutionRun | None:
        """A run with its generation reports."""
        ...

    async def list_runs(self, query: ListQuery) -> Page[EvolutionRun]:
        """A page of runs, newest first, without reports or code."""
        ...

    async def events_after(self, run_id: str, after_sequence: int, limit: int) -> list[Event]:
        """Stored events with a greater sequence, in order."""
        ...

    async def list_candidates(self, query: CandidateQuery) -> Page[Candidate] | None:
        """A page of a run's stored candidates by (generation, code hash) after ``query.after``; None for an
        unknown run."""
        ...

    async def claim(
        self, owner: str, lease_until: datetime, now: datetime, limit: int, *, reclaim_own: bool = False,
        exclude: Sequence[str] = (),
    ) -> list[Lease]:
        """Takes unfinished runs whose lease expired (or that have no owner, or, with ``reclaim_own``, that
        ``owner`` held before a restart), except those in ``exclude`` (worked on by the caller); bumps their
        attempt."""
        ...

    async def renew(self, lease: Lease, lease_until: datetime) -> None:
        """Extends a lease; raises LostLease when it is no longer ours or the run ended."""
        ...

    async def release(self, lease: Lease) -> None:
        """Gives a lease up (graceful stop) so that another replica, or a restart, resumes the run at once."""
        ...

    async def load_work(self, run_id: str) -> WorkItem:
        """The run, its seed code and its last checkpoint."""
        ...

    async def append(self, lease: Lease, draft: EventDraft, update: RunUpdate) -> Event:
        """Appends an event and applies ``update`` in one transaction, fenced by the lease."""
        ...

    async def cancel(self, run_id: str, reason: str) -> tuple[EvolutionRun | None, bool]:
        """Cancels an unfinished run with its event: (the run, whether this call cancelled it); (None, False)
        for an unknown run."""
        ...


class PolicyRepository(Protocol):
    """The policies table (and the one run lookup the loop needs); see SqlRunRepository."""

    async def run_by_request_id(self, request_id: str) -> EvolutionRun | None:
        """The run started with this idempotency key, if any."""
        ...

    async def put_policy(self, policy: EvolutionPolicy, now: datetime) -> EvolutionPolicy:
        """Creates or replaces a policy's settings (an existing one keeps its status)."""
        ...

    async def get_policy(self, agent_id: str) -> EvolutionPolicy | None:
        """One agent's policy."""
        ...

    async def list_policies(self, after: str | None, size: int) -> Page[EvolutionPolicy]:
        """A page of policies by agent id."""
        ...

    async def delete_policy(self, agent_id: str) -> bool:
        """Removes a policy; False when there was none."""
        ...

    async def claim_policies(self, owner: str, now: datetime, lease_until: datetime, limit: int,
                             agent_id: str | None = None) -> list[str]:
        """Takes the leases of policies nobody else holds."""
        ...

    async def save_policy_status(self, agent_id: str, owner: str, status: PolicyStatus) -> bool:
        """Stores a status, fenced on the lease."""
        ...

    async def release_policies(self, owner: str, agent_ids: Sequence[str]) -> None:
        """Gives up leases."""
        ...
