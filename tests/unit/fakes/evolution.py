"""In-memory fakes of evolution_svc.ports: the run repository, the registry, a runner, a cache and models.

``FakeRunRepository`` keeps what ``SqlRunRepository`` promises: a request id is stored with its request's
fingerprint, replayed with the same one (or with none on either side) it returns the first run and False, with
a different one it raises RequestIdReused and stores nothing; pages are newest first after a (create time ISO,
run_id) position fetched as ``page_size + 1``, every write of a worker is fenced by (owner, attempt) and by the
run being unfinished (LostLease), and sequence numbers have no gaps. Candidates are kept once per run and
code hash (the first record stands) and listed by (generation, code hash). ``FakeRegistry.get_agent`` raises the
NotFound reasons the registry client raises (AGENT_NOT_FOUND, AGENT_VERSION_NOT_FOUND).
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from evolution_svc import codec, transforms
from evolution_svc.domain import (
    AgentSource,
    Candidate,
    CandidateQuery,
    EvaluationLimits,
    Event,
    EventType,
    EvolutionRun,
    JsonObject,
    ListQuery,
    Measurement,
    RunState,
    StopReason,
)
from evolution_svc.llm_operators import child_code
from evolution_svc.ports import (
    CaseRun,
    EventDraft,
    FailingCase,
    Lease,
    LostLease,
    ModelAnswer,
    ModelError,
    NewRun,
    RunUpdate,
    WorkItem,
)
from evolution_svc.repository import utc_now
from tdev_common import paging
from tdev_common.errors import NotFound
from tdev_common.idempotency import check_same_request
from tdev_common.paging import Page


@dataclass
class _RunRow:
    run: EvolutionRun
    request_id: str
    seed_code: str
    owner: str | None
    lease_until: datetime | None
    attempt: int = 1
    fingerprint: str | None = None
    checkpoint: bytes | None = None
    checkpoint_generation: int = 0
    events: list[Event] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)


class FakeRunRepository:
    """evolution_svc.ports.RunRepository in dicts."""

    def __init__(self) -> None:
        self.rows: dict[str, _RunRow] = {}

    def _view(self, row: _RunRow, *, include_code: bool, reports: bool = True) -> EvolutionRun:
        run = row.run
        if run.best is not None and not include_code:
            run = replace(run, best=codec.candidate_from_json(codec.candidate_to_json(run.best, include_code=False)))
        generations = tuple(e.report for e in row.events
                            if e.type is EventType.GENERATION_COMPLETED and e.report is not None)
        return replace(run, generations=generations if reports else ())

    async def insert(self, new: NewRun, owner: str, lease_until: datetime) -> tuple[EvolutionRun, bool]:
        if new.request_id:
            first = next((r for r in self.rows.values() if r.request_id == new.request_id), None)
            if first is not None:
                check_same_request(new.request_id, first.fingerprint, new.fingerprint,
                                   f'evolution run "{first.run.run_id}"')
                return self._view(first, include_code=True), False
        if new.run.run_id in self.rows:
            raise KeyError(f"duplicate run id {new.run.run_id}")
        run = replace(new.run, last_sequence=0, generations=(), best=None, promotion=None, seed_fitness=0.0)
        self.rows[run.run_id] = _RunRow(run, new.request_id, new.seed_code, owner, lease_until,
                                        fingerprint=(new.fingerprint or None) if new.request_id else None)
        return run, True

    async def get(self, run_id: str, *, include_code: bool) -> EvolutionRun | None:
        row = self.rows.get(run_id)
        return None if row is None else self._view(row, include_code=include_code)

    async def list_runs(self, query: ListQuery) -> Page[EvolutionRun]:
        rows = [r for r in self.rows.values()
                if (not query.agent_id or r.run.agent_id == query.agent_id)
                and (query.state is None or r.run.state is query.state)]
        rows.sort(key=lambda r: (r.run.create_time, r.run.run_id), reverse=True)
        if query.after is not None:
            created, run_id = datetime.fromisoformat(query.after[0]), query.after[1]
            rows = [r for r in rows if (r.run.create_time, r.run.run_id) < (created, run_id)]
        page = paging.take(rows[:query.page_size + 1], query.page_size,
                           lambda last: [last.run.create_time.isoformat(), last.run.run_id])
        return Page([self._view(r, include_code=False, reports=False) for r in page.items], page.after)

    async def events_after(self, run_id: str, after_sequence: int, limit: int) -> list[Event]:
        row = self.rows.get(run_id)
        return [] if row is None else [e for e in row.events if e.sequence > after_sequence][:limit]

    async def list_candidates(self, query: CandidateQuery) -> Page[Candidate] | None:
        row = self.rows.get(query.run_id)
        if row is None:
            return None
        ordered = sorted(row.candidates.values(), key=lambda c: (c.generation, c.code_hash))
        if query.after is not None:
            ordered = [c for c in ordered if (c.generation, c.code_hash) > query.after]
        page = paging.take(ordered[:query.page_size + 1], query.page_size,
                           lambda last: [last.generation, last.code_hash])
        items = [c if query.include_code else replace(c, code="") for c in page.items]
        return Page(items, page.after)

    async def claim(
        self, owner: str, lease_until: datetime, now: datetime, limit: int, *, reclaim_own: bool = False,
        exclude: Sequence[str] = (),
    ) -> list[Lease]:
        leases: list[Lease] = []
        for row in sorted(self.rows.values(), key=lambda r: r.run.create_time):
            if len(leases) == limit:
                break
            free = row.owner is None or (row.lease_until is not None and row.lease_until < now) or (
                reclaim_own and row.owner == owner)
            if row.run.state.is_terminal or not free or row.run.run_id in exclude:
                continue
            row.owner, row.lease_until, row.attempt = owner, lease_until, row.attempt + 1
            leases.append(Lease(row.run.run_id, owner, row.attempt))
        return leases

    def _fenced(self, lease: Lease) -> _RunRow:
        row = self.rows.get(lease.run_id)
        if row is None or row.owner != lease.owner or row.attempt != lease.attempt or row.run.state.is_terminal:
            raise LostLease(lease.run_id)
        return row

    async def renew(self, lease: Lease, lease_until: datetime) -> None:
        self._fenced(lease).lease_until = lease_until

    async def release(self, lease: Lease) -> None:
        try:
            row = self._fenced(lease)
        except LostLease:
            return
        row.owner, row.lease_until = None, None

    async def load_work(self, run_id: str) -> WorkItem:
        row = self.rows.get(run_id)
        if row is None:
            raise LostLease(run_id)
        return WorkItem(run=self._view(row, include_code=True), seed_code=row.seed_code, checkpoint=row.checkpoint)

    def _append_event(self, row: _RunRow, draft: EventDraft, now: datetime) -> Event:
        event = Event(sequence=row.run.last_sequence, run_id=row.run.run_id, type=draft.type, time=now,
                      report=draft.report, promotion=draft.promotion, message=draft.message,
                      stop_reason=draft.stop_reason)
        row.events.append(event)
        return event

    async def append(self, lease: Lease, draft: EventDraft, update: RunUpdate) -> Event:
        row = self._fenced(lease)
        now = utc_now()
        run = replace(row.run, last_sequence=row.run.last_sequence + 1, update_time=now)
        if update.state is not None:
            run = replace(run, state=update.state)
            if update.state.is_terminal:
                row.owner, row.lease_until = None, None
        for name in ("stop_reason", "stop_message", "seed_fitness", "promotion", "error"):
            value = getattr(update, name)
            if value is not None:
                run = replace(run, **{name: value})
        if update.best_json is not None:
            run = replace(run, best=codec.candidate_from_json(update.best_json))
        if update.checkpoint is not None:
            row.checkpoint = update.checkpoint
        if update.checkpoint_generation is not None:
            row.checkpoint_generation = update.checkpoint_generation
        for candidate in update.candidates:
            row.candidates.setdefault(candidate.code_hash, candidate)
        row.run = run
        return self._append_event(row, draft, now)

    async def cancel(self, run_id: str, reason: str) -> tuple[EvolutionRun | None, bool]:
        row = self.rows.get(run_id)
        if row is None:
            return None, False
        if row.run.state.is_terminal:
            return self._view(row, include_code=True), False
        now = utc_now()
        message = f"cancelled: {reason}" if reason else "cancelled by a caller"
        row.run = replace(row.run, state=RunState.CANCELLED, stop_reason=StopReason.CANCELLED, stop_message=message,
                          last_sequence=row.run.last_sequence + 1, update_time=now)
        row.owner, row.lease_until = None, None
        self._append_event(row, EventDraft(EventType.RUN_CANCELLED, message=message,
                                           stop_reason=StopReason.CANCELLED), now)
        return self._view(row, include_code=True), True


class FakeRegistry:
    """evolution_svc.ports.Registry over a list of versions; register_version is idempotent per request id."""

    def __init__(self, agents: Sequence[AgentSource] = ()) -> None:
        self.agents: list[AgentSource] = list(agents)
        self.registered: list[tuple[AgentSource, Mapping[str, str], str]] = []
        # request id -> (what the request asked for, what it registered), as the registry's request table.
        self._requests: dict[str, tuple[tuple[object, ...], AgentSource]] = {}

    async def get_agent(self, agent: str, version: str) -> AgentSource:
        matches = [a for a in self.agents if agent in (a.agent_id, a.name) and (not version or a.version == version)]
        if not matches:
            if version:
                raise NotFound(f'agent "{agent}" has no version "{version}" in the registry',
                               reason="AGENT_VERSION_NOT_FOUND", metadata={"agent": agent, "version": version})
            raise NotFound(f'unknown agent "{agent}": no registry agent has this id or name',
                           reason="AGENT_NOT_FOUND", metadata={"agent": agent})
        return matches[-1]

    async def register_version(self, source: AgentSource, code: str, *, labels: Mapping[str, str],
                               request_id: str) -> AgentSource:
        asked = (source.agent_id, source.name, source.version, source.description, code, sorted(labels.items()))
        if request_id in self._requests:
            first_asked, first = self._requests[request_id]
            # The registry answers a request id reused for another request with REQUEST_ID_REUSED.
            check_same_request(request_id, repr(first_asked), repr(asked), f"agent version {first.version}")
            return first
        same_code = next((agent for agent in self.agents if agent.agent_id == source.agent_id and agent.code == code),
                         None)
        if same_code is not None:
            return same_code  # the registry is idempotent by name and code too
        major, minor, _ = (int(part) for part in source.version.split("."))
        new = AgentSource(source.agent_id, source.name, f"{major}.{minor + 1}.0", code, source.description)
        self.agents.append(new)
        self.registered.append((new, dict(labels), request_id))
        if request_id:
            self._requests[request_id] = (asked, new)
        return new


class InProcessRunner:
    """CandidateRunner that runs trusted test programs in this process (no sandbox child, no time limits).

    Only for the small programs the unit tests write and the AST transforms derive from them.
    """

    def __init__(self) -> None:
        self.batches = 0

    async def run_cases(self, code: str, inputs: Sequence[JsonObject], limits: EvaluationLimits) -> list[CaseRun]:
        self.batches += 1
        namespace: dict[str, Any] = {}
        try:
            exec(compile(code, "<candidate>", "exec"), namespace)
            agent_class = next(v for v in namespace.values() if inspect.isclass(v) and hasattr(v, "execute"))
            agent: Any = agent_class()
        except Exception as error:  # a program that cannot load fails every case, like the sandbox runner
            return [CaseRun(ok=False, error=f"{type(error).__name__}: {error}") for _ in inputs]
        results = []
        for case in inputs:
            try:
                results.append(CaseRun(ok=True, output=json.loads(json.dumps(agent.execute(dict(case)))),
                                       duration_ms=1.0))
            except Exception as error:
                results.append(CaseRun(ok=False, error=f"{type(error).__name__}: {error}", duration_ms=1.0))
        return results


class MemoryCache:
    """MeasurementCache in a dict."""

    def __init__(self) -> None:
        self.entries: dict[str, Measurement] = {}

    async def get(self, key: str) -> Measurement | None:
        return self.entries.get(key)

    async def put(self, key: str, measurement: Measurement) -> None:
        self.entries[key] = measurement


class ScriptedModel:
    """ModelClient answering from a list of MUTATION_SCHEMA-shaped answers at a fixed price per call."""

    def __init__(self, answers: Sequence[object], price: float = 0.0, is_model: bool = True) -> None:
        self.answers = list(answers)
        self.price = price
        self.calls: list[str] = []
        self._is_model = is_model

    @property
    def is_model(self) -> bool:
        return self._is_model

    def _answer(self, code: str, prompt: str) -> ModelAnswer:
        self.calls.append(prompt)
        if not self.answers:
            raise ModelError("no scripted answer left")
        return ModelAnswer(code=child_code(code, self.answers.pop(0)), cost_usd=self.price)

    async def mutate(self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int) -> ModelAnswer:
        return self._answer(
            code, json.dumps([{"inputs": f.inputs, "expected": f.expected, "got": f.got} for f in failing])
        )

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        return self._answer(code, other_code)


class TransformModel:
    """A priced stand-in for a model: answers with the AST transforms (deterministic for a seed)."""

    def __init__(self, price: float) -> None:
        self.price = price
        self.calls = 0

    @property
    def is_model(self) -> bool:
        return True

    async def mutate(self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int) -> ModelAnswer:
        self.calls += 1
        operator = transforms.MUTATION_OPERATORS[seed % len(transforms.MUTATION_OPERATORS)]
        return ModelAnswer(code=transforms.mutate(code, operator, random.Random(seed)), cost_usd=self.price)

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        self.calls += 1
        return ModelAnswer(code=transforms.crossover(code, other_code, random.Random(seed)), cost_usd=self.price)
