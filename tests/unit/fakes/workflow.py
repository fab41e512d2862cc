"""In-memory fakes of workflow_svc.ports: the repository, the registry and the agent runner.

``FakeRepository`` keeps what ``SqlRepository`` promises: request ids are stored with their request's
fingerprint, a replay with the same one (or with none on either side) returns the first workflow or execution
(and no claim) and a different one raises RequestIdReused and writes nothing; lists are newest first after a
(create_time, id) cursor (an aware UTC datetime, as in the domain) with the caller's limit, leases are (owner,
epoch) pairs bumped on every claim, and every write of a holder is fenced by them (LeaseLost, nothing written,
when they do not match). Times are aware datetimes; lease arithmetic (``now``, expiries) stays float seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tdev_common.clock import from_epoch
from tdev_common.idempotency import check_same_request
from workflow_svc.domain import (
    AgentInfo,
    AgentRef,
    AliasTarget,
    AttemptResult,
    Batch,
    Claim,
    ErrorInfo,
    Event,
    Execution,
    ExecutionFilter,
    ExecutionState,
    JsonObject,
    NodeRun,
    OutcomeRecord,
    Workflow,
)
from workflow_svc.ports import AgentNotFound, Cursor, LeaseLost

ACTIVE = (ExecutionState.PENDING, ExecutionState.RUNNING)


@dataclass
class _ExecutionRow:
    execution: Execution
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    owner: str | None = None
    epoch: int = 0
    expires: float | None = None
    cancel_reason: str = ""
    fingerprint: str | None = None


class FakeRepository:
    """workflow_svc.ports.Repository in dicts."""

    def __init__(self) -> None:
        self.workflows: dict[str, Workflow] = {}
        # request id -> (the workflow it created, the request's fingerprint or None), as workflows.request_id.
        self.workflow_requests: dict[str, tuple[str, str | None]] = {}
        self.executions: dict[str, _ExecutionRow] = {}
        self.events: dict[str, list[Event]] = {}
        self.outbox: list[OutcomeRecord] = []
        self.writes = 0

    # -- workflows --------------------------------------------------------------------------------------
    async def insert_workflow(self, workflow: Workflow, request_id: str, fingerprint: str = "") -> Workflow:
        if request_id:
            existing = await self.find_workflow_by_request(request_id, fingerprint)
            if existing is not None:
                return existing
        if workflow.workflow_id in self.workflows:
            raise KeyError(f"duplicate workflow id {workflow.workflow_id}")
        self.workflows[workflow.workflow_id] = workflow
        if request_id:
            self.workflow_requests[request_id] = (workflow.workflow_id, fingerprint or None)
        return workflow

    async def find_workflow_by_request(self, request_id: str, fingerprint: str = "") -> Workflow | None:
        found = self.workflow_requests.get(request_id)
        if found is None:
            return None
        workflow_id, stored = found
        check_same_request(request_id, stored, fingerprint, f'workflow "{workflow_id}"')
        return self.workflows[workflow_id]

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        return self.workflows.get(workflow_id)

    async def list_workflows(self, page_size: int, after: Cursor | None, name_contains: str) -> list[Workflow]:
        rows = [w for w in self.workflows.values() if name_contains in w.spec.name]
        rows.sort(key=lambda w: (w.create_time, w.workflow_id), reverse=True)
        if after is not None:
            rows = [w for w in rows if (w.create_time, w.workflow_id) < tuple(after)]
        return rows[:page_size]

    # -- executions -------------------------------------------------------------------------------------
    async def insert_execution(
        self, execution: Execution, owner: str | None, lease_expires: float | None, fingerprint: str = ""
    ) -> tuple[Execution, Claim | None]:
        if execution.request_id:
            existing = await self.find_execution_by_request(execution.request_id, fingerprint)
            if existing is not None:
                return existing, None
        if execution.execution_id in self.executions:
            raise KeyError(f"duplicate execution id {execution.execution_id}")
        self.executions[execution.execution_id] = _ExecutionRow(
            replace(execution, nodes=(), last_sequence=0, cancel_requested=False), owner=owner,
            epoch=1 if owner else 0, expires=lease_expires if owner else None,
            fingerprint=(fingerprint or None) if execution.request_id else None)
        self.events[execution.execution_id] = []
        return execution, (Claim(execution.execution_id, owner, 1) if owner else None)

    def _view(self, row: _ExecutionRow, with_nodes: bool) -> Execution:
        return replace(row.execution, nodes=tuple(row.nodes.values()) if with_nodes else ())

    async def find_execution_by_request(self, request_id: str, fingerprint: str = "") -> Execution | None:
        row = next((r for r in self.executions.values() if r.execution.request_id == request_id), None)
        if row is None:
            return None
        check_same_request(request_id, row.fingerprint, fingerprint, f'execution "{row.execution.execution_id}"')
        return self._view(row, False)

    async def get_execution(self, execution_id: str, *, with_nodes: bool = True) -> Execution | None:
        row = self.executions.get(execution_id)
        return None if row is None else self._view(row, with_nodes)

    async def list_executions(self, query: ExecutionFilter, page_size: int, after: Cursor | None) -> list[Execution]:
        rows = [r.execution for r in self.executions.values()
                if (not query.workflow_id or r.execution.workflow_id == query.workflow_id)
                and (query.state == ExecutionState.UNSPECIFIED or r.execution.state == query.state)]
        rows.sort(key=lambda e: (e.create_time, e.execution_id), reverse=True)
        if after is not None:
            rows = [e for e in rows if (e.create_time, e.execution_id) < tuple(after)]
        return rows[:page_size]

    async def events_after(self, execution_id: str, after_sequence: int, limit: int) -> list[Event]:
        return [e for e in self.events.get(execution_id, ()) if e.sequence > after_sequence][:limit]

    async def request_cancel(
        self, execution_id: str, reason: str, now: float
    ) -> tuple[ExecutionState, str | None, float | None] | None:
        row = self.executions.get(execution_id)
        if row is None:
            return None
        state = row.execution.state
        if not state.is_terminal:
            row.execution = replace(row.execution, cancel_requested=True, update_time=from_epoch(now))
            row.cancel_reason = reason
        return state, row.owner, row.expires

    async def cancel_reason(self, execution_id: str) -> str:
        row = self.executions.get(execution_id)
        return row.cancel_reason if row else ""

    # -- leases -----------------------------------------------------------------------------------------
    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool = False,
        execution_id: str | None = None, exclude: Sequence[str] = (),
    ) -> list[Claim]:
        if limit <= 0:
            return []
        claims: list[Claim] = []
        for row in sorted(self.executions.values(), key=lambda r: r.execution.create_time):
            if len(claims) == limit:
                break
            ex = row.execution
            free = row.owner is None or (row.expires is not None and row.expires < now) or (
                reclaim_own and row.owner == owner)
            if (ex.state not in ACTIVE or not free or ex.execution_id in exclude
                    or (execution_id is not None and ex.execution_id != execution_id)):
                continue
            row.owner, row.epoch, row.expires = owner, row.epoch + 1, now + lease_seconds
            claims.append(Claim(ex.execution_id, owner, row.epoch))
        return claims

    def _holds(self, claim: Claim) -> _ExecutionRow | None:
        row = self.executions.get(claim.execution_id)
        if row is None or row.owner != claim.owner or row.epoch != claim.epoch:
            return None
        return row

    async def renew(self, claims: Sequence[Claim], now: float, lease_seconds: float) -> tuple[set[str], set[str]]:
        held, cancelled = set(), set()
        for claim in claims:
            row = self._holds(claim)
            if row is None:
                continue
            row.expires = now + lease_seconds
            held.add(claim.execution_id)
            if row.execution.cancel_requested:
                cancelled.add(claim.execution_id)
        return held, cancelled

    async def release(self, claim: Claim) -> None:
        row = self._holds(claim)
        if row is not None:
            row.owner, row.expires = None, None

    async def write(self, claim: Claim, batch: Batch, now: float, lease_seconds: float) -> None:
        row = self._holds(claim)
        if row is None:
            raise LeaseLost(claim.execution_id)
        self.writes += 1
        changes: dict[str, object] = {"update_time": from_epoch(now)}
        if batch.events:
            changes["last_sequence"] = max(row.execution.last_sequence, batch.events[-1].sequence)
        update = batch.execution
        if update is not None:
            for name in ("state", "outputs", "error", "start_time", "end_time"):
                value = getattr(update, name)
                if value is not None:
                    changes[name] = value
        row.execution = replace(row.execution, **changes)  # type: ignore[arg-type]
        if batch.release:
            row.owner, row.expires = None, None
        else:
            row.expires = now + lease_seconds
        # Copies: the engine keeps mutating its own objects after a write, a database would not see that.
        row.nodes.update(copy.deepcopy(batch.nodes))
        self.events[claim.execution_id].extend(copy.deepcopy(batch.events))
        self.outbox.extend(batch.outbox)

    async def drain_outbox(self, limit: int, send: Callable[[list[OutcomeRecord]], Awaitable[None]]) -> int:
        taken = self.outbox[:limit]
        if not taken:
            return 0
        await send(list(taken))  # raising leaves the records for the next attempt
        del self.outbox[:len(taken)]
        return len(taken)


class FakeRegistry:
    """workflow_svc.ports.Registry over a dict of agents; ``down`` makes every call raise that error."""

    def __init__(self, agents: Sequence[AgentInfo] = ()) -> None:
        self.agents: list[AgentInfo] = list(agents)
        self.records: list[OutcomeRecord] = []
        self.down: Exception | None = None
        self.lookups: list[AgentRef] = []
        self.alias_targets: dict[str, dict[str, AliasTarget]] = {}

    async def get_agent(self, ref: AgentRef, *, with_code: bool) -> AgentInfo:
        self.lookups.append(ref)
        if self.down is not None:
            raise self.down
        matches = [a for a in self.agents if ref.agent in (a.agent_id, a.name)
                   and (not ref.version or a.version == ref.version)]
        if not matches:
            raise AgentNotFound(f"{ref.agent}@{ref.version or 'latest'}")
        found = matches[-1]  # the latest is the last one registered
        return found if with_code else replace(found, code="")

    async def record(self, records: Sequence[OutcomeRecord]) -> None:
        if self.down is not None:
            raise self.down
        self.records.extend(records)

    async def aliases(self, agent_id: str) -> dict[str, AliasTarget]:
        if self.down is not None:
            raise self.down
        return dict(self.alias_targets.get(agent_id, {}))


Behaviour = Callable[[JsonObject], AttemptResult]


class FakeRunner:
    """AgentRunner that answers from a Python callable per agent code instead of a sandbox child."""

    def __init__(self, behaviours: Mapping[str, Behaviour]) -> None:
        self.behaviours = dict(behaviours)
        self.runs: list[tuple[str, JsonObject]] = []
        self.closed = False

    async def run(self, code: str, inputs: JsonObject, timeout_seconds: float, resources: JsonObject,
                  warm_group: str = "") -> AttemptResult:
        self.runs.append((code, inputs))
        behaviour = self.behaviours.get(code)
        if behaviour is None:
            return AttemptResult(ok=False, error=ErrorInfo("LookupError", f"no behaviour for code {code!r}"),
                                 retryable=False)
        return behaviour(inputs)

    async def close(self) -> None:
        self.closed = True
