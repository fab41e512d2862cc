"""The only code that reads and writes the ``workflow`` tables; returns domain objects.

Leases: an execution row carries (lease_owner, lease_epoch, lease_expires). Claiming takes rows that
are unowned or expired with ``FOR UPDATE SKIP LOCKED`` on Postgres and bumps the epoch; every later
write of the holder is an UPDATE fenced by (owner, epoch), so a stale worker's late write changes
nothing and is rejected. On SQLite (one embedded process) the same statements run without row locks:
SQLite serialises writers, which degrades leases to a single owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tdev_common.clock import from_epoch, optional_from_epoch, optional_to_epoch, to_epoch
from tdev_common.completion import completes
from tdev_common.idempotency import check_same_request
from workflow_svc.domain import (
    Batch,
    CapturePolicy,
    Claim,
    ErrorInfo,
    Event,
    EventType,
    Execution,
    ExecutionFilter,
    ExecutionPlan,
    ExecutionState,
    FailurePolicy,
    NodeRun,
    NodeSpec,
    NodeState,
    OutcomeRecord,
    PlanGeneration,
    RetryPolicy,
    Workflow,
    WorkflowSpec,
)
from workflow_svc.models import EventRow, ExecutionRow, NodeRunRow, OutboxRow, WorkflowRow
from workflow_svc.ports import Cursor, LeaseLost

workflows: sa.Table = WorkflowRow.__table__  # type: ignore[assignment]
executions: sa.Table = ExecutionRow.__table__  # type: ignore[assignment]
node_runs: sa.Table = NodeRunRow.__table__  # type: ignore[assignment]
events: sa.Table = EventRow.__table__  # type: ignore[assignment]
outbox: sa.Table = OutboxRow.__table__  # type: ignore[assignment]

__all__ = ["Cursor", "LeaseLost", "SqlRepository"]
ACTIVE_STATES = (int(ExecutionState.PENDING), int(ExecutionState.RUNNING))


def _record_json(record: OutcomeRecord) -> dict[str, Any]:
    # Explicit, not dataclasses.asdict: asdict deep-copies and costs more than the rest of the write.
    return {
        "record_id": record.record_id,
        "agent_id": record.agent_id,
        "version": record.version,
        "success": record.success,
        "duration_ms": record.duration_ms,
        "finish_time": to_epoch(record.finish_time),
        "error_type": record.error_type,
        **({"case": record.case} if record.case is not None else {}),
    }


def _record_from_json(value: dict[str, Any]) -> OutcomeRecord:
    # The stored record keeps its finish time as epoch seconds (rows queued before the change read the same).
    return OutcomeRecord(**{**value, "finish_time": from_epoch(value["finish_time"])})


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# One statement per batch (one round trip, atomic without BEGIN/COMMIT): the fenced UPDATE of the
# execution row, and the node, event and outbox rows as arrays, written only if the fence matched.
_PG_WRITE = """
WITH fence AS (
  UPDATE workflow.executions SET
    update_time = $1, lease_expires = $2, last_sequence = GREATEST(last_sequence, $3),
    lease_owner = CASE WHEN $7 THEN NULL ELSE lease_owner END,
    state = COALESCE($8, state), outputs = COALESCE($9::text::json, outputs),
    error = COALESCE($10::text::json, error), start_time = COALESCE($11, start_time),
    end_time = COALESCE($12, end_time)
  WHERE execution_id = $4 AND lease_owner = $5 AND lease_epoch = $6
  RETURNING 1
), nodes AS (
  INSERT INTO workflow.node_runs (execution_id, node_id, state, attempt, failures, output, output_ref, error,
    start_time, end_time, duration_ms, agent_version)
  SELECT $4, n, s, a, f, o::json, r, e::json, st, et, d, v
  FROM unnest($13::text[], $14::smallint[], $15::int[], $16::int[], $17::text[], $18::text[], $19::text[],
    $20::float8[], $21::float8[], $22::float8[], $23::text[]) AS u(n, s, a, f, o, r, e, st, et, d, v)
  WHERE EXISTS (SELECT 1 FROM fence)
  ON CONFLICT (execution_id, node_id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
    failures = excluded.failures, output = excluded.output, output_ref = excluded.output_ref,
    error = excluded.error, start_time = excluded.start_time, end_time = excluded.end_time,
    duration_ms = excluded.duration_ms, agent_version = excluded.agent_version
), events AS (
  INSERT INTO workflow.events (execution_id, sequence, type, time, node_id, attempt, duration_ms, output,
    output_ref, error, backoff_seconds, message, worker_id)
  SELECT $4, q, t, tm, n, a, d, o::json, r, e::json, b, m, w
  FROM unnest($24::bigint[], $25::smallint[], $26::float8[], $27::text[], $28::int[], $29::float8[],
    $30::text[], $31::text[], $32::text[], $33::float8[], $34::text[], $35::text[])
    AS u(q, t, tm, n, a, d, o, r, e, b, m, w)
  WHERE EXISTS (SELECT 1 FROM fence)
), outbox AS (
  INSERT INTO workflow.registry_outbox (record)
  SELECT r::json FROM unnest($36::text[]) AS u(r) WHERE EXISTS (SELECT 1 FROM fence)
)
SELECT count(*) FROM fence
"""
HOT_CONNECTIONS = 4


# -- definitions <-> JSON -------------------------------------------------------------------------------------
def spec_to_json(spec: WorkflowSpec) -> dict[str, Any]:
    """A definition as stored."""
    value = asdict(spec)
    value["failure_policy"] = int(spec.failure_policy)
    return value


def spec_from_json(value: dict[str, Any]) -> WorkflowSpec:
    """The inverse of :func:`spec_to_json`."""
    nodes = tuple(
        NodeSpec(
            id=node["id"],
            agent_id=node["agent_id"],
            agent_version=node.get("agent_version", ""),
            inputs=node.get("inputs") or {},
            depends_on=tuple(node.get("depends_on") or ()),
            retry_policy=RetryPolicy(**(node.get("retry_policy") or {})),
            timeout_seconds=node.get("timeout_seconds", 0.0),
            required_resources=node.get("required_resources") or {},
            agent_name=node.get("agent_name", ""),
            agent_alias=node.get("agent_alias", ""),
        )
        for node in value.get("nodes", ())
    )
    return WorkflowSpec(
        name=value["name"],
        version=value.get("version", ""),
        description=value.get("description", ""),
        nodes=nodes,
        metadata=value.get("metadata") or {},
        failure_policy=FailurePolicy(value.get("failure_policy", 0)),
        max_concurrency=value.get("max_concurrency", 0),
        outputs=value.get("outputs") or {},
        capture=_capture_from_json(value.get("capture") or {}),
    )


def _capture_from_json(value: dict[str, Any]) -> CapturePolicy:
    # Definitions stored before capture existed have none: off.
    return CapturePolicy(enabled=bool(value.get("enabled", False)),
                         success_sample_rate=float(value.get("success_sample_rate", 0.0)),
                         max_case_bytes=int(value.get("max_case_bytes", 0)),
                         redact_keys=tuple(value.get("redact_keys") or ()))


def plan_to_json(plan: ExecutionPlan) -> dict[str, Any]:
    """A plan as stored."""
    return {
        "generations": [list(g.node_ids) for g in plan.generations],
        "critical_path": list(plan.critical_path),
        "priorities": plan.priorities,
    }


def plan_from_json(value: dict[str, Any]) -> ExecutionPlan:
    """The inverse of :func:`plan_to_json`."""
    return ExecutionPlan(
        generations=tuple(PlanGeneration(tuple(g)) for g in value.get("generations", ())),
        critical_path=tuple(value.get("critical_path", ())),
        priorities=dict(value.get("priorities", {})),
    )


def _workflow(row: Any) -> Workflow:
    return Workflow(
        workflow_id=row.workflow_id,
        spec=spec_from_json(row.definition),
        plan=plan_from_json(row.plan),
        create_time=from_epoch(row.create_time),
        update_time=from_epoch(row.update_time),
    )


def _node_run(row: Any) -> NodeRun:
    return NodeRun(
        node_id=row.node_id,
        state=NodeState(row.state),
        attempt=row.attempt,
        failures=row.failures,
        output=row.output,
        output_ref=row.output_ref,
        error=ErrorInfo.from_json(row.error),
        start_time=optional_from_epoch(row.start_time),
        end_time=optional_from_epoch(row.end_time),
        duration_ms=row.duration_ms,
        agent_version=row.agent_version,
    )


def _execution(row: Any, nodes: Sequence[NodeRun] = ()) -> Execution:
    return Execution(
        execution_id=row.execution_id,
        workflow_id=row.workflow_id,
        state=ExecutionState(row.state),
        inputs=row.inputs,
        failure_policy=FailurePolicy(row.failure_policy),
        create_time=from_epoch(row.create_time),
        update_time=from_epoch(row.update_time),
        outputs=row.outputs,
        error=ErrorInfo.from_json(row.error),
        last_sequence=row.last_sequence,
        start_time=optional_from_epoch(row.start_time),
        end_time=optional_from_epoch(row.end_time),
        nodes=tuple(nodes),
        cancel_requested=row.cancel_requested,
        request_id=row.request_id or "",
    )


def _event(row: Any) -> Event:
    return Event(
        execution_id=row.execution_id,
        sequence=row.sequence,
        type=EventType(row.type),
        time=from_epoch(row.time),
        node_id=row.node_id,
        attempt=row.attempt,
        duration_ms=row.duration_ms,
        output=row.output,
        output_ref=row.output_ref,
        error=ErrorInfo.from_json(row.error),
        backoff_seconds=row.backoff_seconds,
        message=row.message,
        worker_id=row.worker_id,
    )


def _event_row(event: Event) -> dict[str, Any]:
    return {
        "execution_id": event.execution_id,
        "sequence": event.sequence,
        "type": int(event.type),
        "time": to_epoch(event.time),
        "node_id": event.node_id,
        "attempt": event.attempt,
        "duration_ms": event.duration_ms,
        "output": event.output,
        "output_ref": event.output_ref,
        "error": event.error.to_json() if event.error else None,
        "backoff_seconds": event.backoff_seconds,
        "message": event.message,
        "worker_id": event.worker_id,
    }


def _node_row(execution_id: str, run: NodeRun) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "node_id": run.node_id,
        "state": int(run.state),
        "attempt": run.attempt,
        "failures": run.failures,
        "output": run.output,
        "output_ref": run.output_ref,
        "error": run.error.to_json() if run.error else None,
        "start_time": optional_to_epoch(run.start_time),
        "end_time": optional_to_epoch(run.end_time),
        "duration_ms": run.duration_ms,
        "agent_version": run.agent_version,
    }


_NODE_UPDATE_COLUMNS = (
    "state",
    "attempt",
    "failures",
    "output",
    "output_ref",
    "error",
    "start_time",
    "end_time",
    "duration_ms",
    "agent_version",
)


class _HotConnection:
    """A pooled connection kept checked out for the batch writes."""

    def __init__(self, owner: SqlRepository, connection: AsyncConnection, driver: Any) -> None:
        self._owner = owner
        self._connection = connection
        self.driver = driver

    @classmethod
    async def open(cls, engine: AsyncEngine, owner: SqlRepository) -> _HotConnection:
        connection = await engine.connect()
        raw = await connection.get_raw_connection()
        return cls(owner, connection, raw.driver_connection)

    async def discard(self) -> None:
        """Gives the connection back to the pool (which resets or drops it)."""
        self._owner._hot_count -= 1
        with contextlib.suppress(Exception):
            await self._connection.close()


class SqlRepository:
    """Workflow tables on Postgres or SQLite through one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; queueing writers here beats spinning on busy_timeout.
        self._write_lock: asyncio.Lock | None = None if self._postgres else asyncio.Lock()
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        upsert = dialect_insert(node_runs)
        self._upsert_nodes = upsert.on_conflict_do_update(
            index_elements=["execution_id", "node_id"],
            set_={name: upsert.excluded[name] for name in _NODE_UPDATE_COLUMNS},
        )
        self._insert_events = events.insert()
        self._insert_outbox = outbox.insert()
        self._hot: asyncio.Queue[_HotConnection] = asyncio.Queue()
        self._hot_count = 0

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._engine.begin() as connection:
                yield connection
        else:
            async with self._write_lock, self._engine.begin() as connection:
                yield connection

    # -- workflows ------------------------------------------------------------------------------------------
    async def insert_workflow(self, workflow: Workflow, request_id: str, fingerprint: str = "") -> Workflow:
        """Stores a workflow; with a request id seen before, returns the first workflow instead.

        Raises:
            RequestIdReused: the request id was stored with another request's fingerprint.
        """
        row = {
            "workflow_id": workflow.workflow_id,
            "name": workflow.spec.name,
            "version": workflow.spec.version,
            "description": workflow.spec.description,
            "definition": spec_to_json(workflow.spec),
            "plan": plan_to_json(workflow.plan),
            "request_id": request_id or None,
            "request_fingerprint": (fingerprint or None) if request_id else None,
            "create_time": to_epoch(workflow.create_time),
            "update_time": to_epoch(workflow.update_time),
        }
        try:
            async with self._write() as connection:
                await connection.execute(workflows.insert(), row)
        except IntegrityError:
            existing = await self.find_workflow_by_request(request_id, fingerprint) if request_id else None
            if existing is None:
                raise
            return existing
        return workflow

    async def find_workflow_by_request(self, request_id: str, fingerprint: str = "") -> Workflow | None:
        """The workflow a request id created, or None.

        Raises:
            RequestIdReused: the request id was stored with another request's fingerprint.
        """
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(workflows.select().where(workflows.c.request_id == request_id))
            ).first()
        if row is None:
            return None
        check_same_request(request_id, row.request_fingerprint, fingerprint, f'workflow "{row.workflow_id}"')
        return _workflow(row)

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """A workflow, or None."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(workflows.select().where(workflows.c.workflow_id == workflow_id))
            ).first()
        return _workflow(row) if row else None

    async def list_workflows(self, page_size: int, after: Cursor | None, name_contains: str) -> list[Workflow]:
        """Up to ``page_size`` workflows, newest first, after the cursor."""
        query = workflows.select()
        if name_contains:
            query = query.where(workflows.c.name.contains(name_contains, autoescape=True))
        if after is not None:
            position = sa.tuple_(to_epoch(after[0]), after[1])
            query = query.where(sa.tuple_(workflows.c.create_time, workflows.c.workflow_id) < position)
        query = query.order_by(workflows.c.create_time.desc(), workflows.c.workflow_id.desc()).limit(page_size)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_workflow(row) for row in rows]

    # -- executions -----------------------------------------------------------------------------------------
    async def insert_execution(
        self, execution: Execution, owner: str | None, lease_expires: float | None, fingerprint: str = ""
    ) -> tuple[Execution, Claim | None]:
        """Stores a new execution, leased to ``owner`` when given.

        With a request id seen before, returns the first execution and no claim.

        Raises:
            RequestIdReused: the request id was stored with another request's fingerprint.
        """
        row = {
            "execution_id": execution.execution_id,
            "workflow_id": execution.workflow_id,
            "state": int(execution.state),
            "inputs": execution.inputs,
            "outputs": None,
            "error": None,
            "failure_policy": int(execution.failure_policy),
            "request_id": execution.request_id or None,
            "request_fingerprint": (fingerprint or None) if execution.request_id else None,
            "last_sequence": 0,
            "create_time": to_epoch(execution.create_time),
            "update_time": to_epoch(execution.update_time),
            "start_time": None,
            "end_time": None,
            "lease_owner": owner,
            "lease_epoch": 1 if owner else 0,
            "lease_expires": lease_expires if owner else None,
            "cancel_requested": False,
            "cancel_reason": "",
        }
        try:
            async with self._write() as connection:
                await connection.execute(executions.insert(), row)
        except IntegrityError:
            existing = (await self.find_execution_by_request(execution.request_id, fingerprint)
                        if execution.request_id else None)
            if existing is None:
                raise
            return existing, None
        return execution, (Claim(execution.execution_id, owner, 1) if owner else None)

    async def find_execution_by_request(self, request_id: str, fingerprint: str = "") -> Execution | None:
        """The execution a request id started, or None.

        Raises:
            RequestIdReused: the request id was stored with another request's fingerprint.
        """
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(executions.select().where(executions.c.request_id == request_id))
            ).first()
        if row is None:
            return None
        check_same_request(request_id, row.request_fingerprint, fingerprint, f'execution "{row.execution_id}"')
        return _execution(row)

    async def get_execution(self, execution_id: str, *, with_nodes: bool = True) -> Execution | None:
        """An execution with its stored node runs, or None."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(executions.select().where(executions.c.execution_id == execution_id))
            ).first()
            if row is None:
                return None
            nodes: list[NodeRun] = []
            if with_nodes:
                result = await connection.execute(
                    node_runs.select().where(node_runs.c.execution_id == execution_id)
                )
                nodes = [_node_run(node) for node in result]
        return _execution(row, nodes)

    async def list_executions(self, query: ExecutionFilter, page_size: int, after: Cursor | None) -> list[Execution]:
        """Up to ``page_size`` executions, newest first, after the cursor, without node runs."""
        select = executions.select()
        if query.workflow_id:
            select = select.where(executions.c.workflow_id == query.workflow_id)
        if query.state != ExecutionState.UNSPECIFIED:
            select = select.where(executions.c.state == int(query.state))
        if after is not None:
            position = sa.tuple_(to_epoch(after[0]), after[1])
            select = select.where(sa.tuple_(executions.c.create_time, executions.c.execution_id) < position)
        select = select.order_by(executions.c.create_time.desc(), executions.c.execution_id.desc()).limit(page_size)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select)).all()
        return [_execution(row) for row in rows]

    async def events_after(self, execution_id: str, after_sequence: int, limit: int) -> list[Event]:
        """Stored events with a sequence above ``after_sequence``, in order."""
        query = (
            events.select()
            .where(events.c.execution_id == execution_id, events.c.sequence > after_sequence)
            .order_by(events.c.sequence)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_event(row) for row in rows]

    async def request_cancel(
        self, execution_id: str, reason: str, now: float
    ) -> tuple[ExecutionState, str | None, float | None] | None:
        """Flags an active execution for cancellation.

        Returns (state, lease owner, lease expiry) as found, or None when the execution does not exist.
        A terminal execution is returned unchanged.
        """
        async with self._write() as connection:
            row = (
                await connection.execute(
                    sa.select(executions.c.state, executions.c.lease_owner, executions.c.lease_expires)
                    .where(executions.c.execution_id == execution_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            state = ExecutionState(row.state)
            if not state.is_terminal:
                await connection.execute(
                    executions.update()
                    .where(executions.c.execution_id == execution_id)
                    .values(cancel_requested=True, cancel_reason=reason, update_time=now)
                )
        return state, row.lease_owner, row.lease_expires

    async def cancel_reason(self, execution_id: str) -> str:
        """The reason stored with a cancellation request ("" when none)."""
        async with self._engine.connect() as connection:
            value = await connection.scalar(
                sa.select(executions.c.cancel_reason).where(executions.c.execution_id == execution_id)
            )
        return str(value or "")

    # -- leases ---------------------------------------------------------------------------------------------
    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool = False,
        execution_id: str | None = None, exclude: Sequence[str] = (),
    ) -> list[Claim]:
        """Leases up to ``limit`` active executions that are unowned or expired (or, with
        ``reclaim_own``, held by ``owner`` from before a restart), except those in ``exclude``; bumps
        their epochs.

        ``exclude`` is what the caller runs right now: its lease may have expired (a database outage
        kept it from renewing) but a new epoch would fence out the caller's own live run.
        """
        if limit <= 0:
            return []
        free = sa.or_(executions.c.lease_owner.is_(None), executions.c.lease_expires < now)
        if reclaim_own:
            free = sa.or_(free, executions.c.lease_owner == owner)
        query = sa.select(executions.c.execution_id).where(executions.c.state.in_(ACTIVE_STATES), free)
        if execution_id is not None:
            query = query.where(executions.c.execution_id == execution_id)
        if exclude:
            query = query.where(executions.c.execution_id.not_in(list(exclude)))
        query = query.order_by(executions.c.create_time).limit(limit)
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        async with self._write() as connection:
            ids = [row.execution_id for row in await connection.execute(query)]
            if not ids:
                return []
            result = await connection.execute(
                executions.update()
                .where(executions.c.execution_id.in_(ids))
                .values(lease_owner=owner, lease_epoch=executions.c.lease_epoch + 1, lease_expires=now + lease_seconds)
                .returning(executions.c.execution_id, executions.c.lease_epoch)
            )
            return [Claim(row.execution_id, owner, row.lease_epoch) for row in result]

    async def renew(self, claims: Sequence[Claim], now: float, lease_seconds: float) -> tuple[set[str], set[str]]:
        """Extends leases still held; returns (ids still held, ids whose cancellation was requested)."""
        if not claims:
            return set(), set()
        owner = claims[0].owner
        keys = [(claim.execution_id, claim.epoch) for claim in claims]
        async with self._write() as connection:
            result = await connection.execute(
                executions.update()
                .where(
                    executions.c.lease_owner == owner,
                    sa.tuple_(executions.c.execution_id, executions.c.lease_epoch).in_(keys),
                )
                .values(lease_expires=now + lease_seconds)
                .returning(executions.c.execution_id, executions.c.cancel_requested)
            )
            rows = result.all()
        return {row.execution_id for row in rows}, {row.execution_id for row in rows if row.cancel_requested}

    async def release(self, claim: Claim) -> None:
        """Gives a lease back (graceful stop) so another replica may take the execution at once."""
        async with self._write() as connection:
            await connection.execute(
                executions.update()
                .where(
                    executions.c.execution_id == claim.execution_id,
                    executions.c.lease_owner == claim.owner,
                    executions.c.lease_epoch == claim.epoch,
                )
                .values(lease_owner=None, lease_expires=None)
            )

    @completes
    async def write(self, claim: Claim, batch: Batch, now: float, lease_seconds: float) -> None:
        """Writes one batch atomically, fenced by the claim.

        Raises:
            LeaseLost: another worker holds the execution now; nothing was written.
        """
        if self._postgres:
            await self._write_postgres(claim, batch, now, lease_seconds)
            return
        values: dict[str, Any] = {"update_time": now}
        if batch.events:
            values["last_sequence"] = batch.events[-1].sequence
        if batch.release:
            values["lease_owner"] = None
            values["lease_expires"] = None
        else:
            values["lease_expires"] = now + lease_seconds
        update = batch.execution
        if update is not None:
            if update.state is not None:
                values["state"] = int(update.state)
            if update.outputs is not None:
                values["outputs"] = update.outputs
            if update.error is not None:
                values["error"] = update.error.to_json()
            if update.start_time is not None:
                values["start_time"] = to_epoch(update.start_time)
            if update.end_time is not None:
                values["end_time"] = to_epoch(update.end_time)
        async with self._write() as connection:
            result = await connection.execute(
                executions.update()
                .where(
                    executions.c.execution_id == claim.execution_id,
                    executions.c.lease_owner == claim.owner,
                    executions.c.lease_epoch == claim.epoch,
                )
                .values(values)
            )
            if result.rowcount != 1:
                raise LeaseLost(claim.execution_id)
            if batch.nodes:
                await connection.execute(
                    self._upsert_nodes, [_node_row(claim.execution_id, run) for run in batch.nodes.values()]
                )
            if batch.events:
                await connection.execute(self._insert_events, [_event_row(event) for event in batch.events])
            if batch.outbox:
                await connection.execute(self._insert_outbox, [{"record": _record_json(r)} for r in batch.outbox])

    async def _write_postgres(self, claim: Claim, batch: Batch, now: float, lease_seconds: float) -> None:
        # The hot path: one prepared statement, rows as arrays, on a connection kept checked out (no pool
        # checkout and no liveness ping per batch). A failed connection is dropped; the caller retries.
        update = batch.execution
        runs = list(batch.nodes.values())
        evs = batch.events
        args = (
            now,
            None if batch.release else now + lease_seconds,
            evs[-1].sequence if evs else 0,
            claim.execution_id,
            claim.owner,
            claim.epoch,
            batch.release,
            int(update.state) if update and update.state is not None else None,
            _dumps(update.outputs) if update and update.outputs is not None else None,
            _dumps(update.error.to_json()) if update and update.error is not None else None,
            optional_to_epoch(update.start_time) if update else None,
            optional_to_epoch(update.end_time) if update else None,
            [r.node_id for r in runs],
            [int(r.state) for r in runs],
            [r.attempt for r in runs],
            [r.failures for r in runs],
            [_dumps(r.output) if r.output is not None else None for r in runs],
            [r.output_ref for r in runs],
            [_dumps(r.error.to_json()) if r.error is not None else None for r in runs],
            [optional_to_epoch(r.start_time) for r in runs],
            [optional_to_epoch(r.end_time) for r in runs],
            [r.duration_ms for r in runs],
            [r.agent_version for r in runs],
            [e.sequence for e in evs],
            [int(e.type) for e in evs],
            [to_epoch(e.time) for e in evs],
            [e.node_id for e in evs],
            [e.attempt for e in evs],
            [e.duration_ms for e in evs],
            [_dumps(e.output) if e.output is not None else None for e in evs],
            [e.output_ref for e in evs],
            [_dumps(e.error.to_json()) if e.error is not None else None for e in evs],
            [e.backoff_seconds for e in evs],
            [e.message for e in evs],
            [e.worker_id for e in evs],
            [_dumps(_record_json(r)) for r in batch.outbox],
        )
        connection = await self._hot_connection()
        try:
            fenced = await connection.driver.fetchval(_PG_WRITE, *args)
        except BaseException:
            await connection.discard()
            raise
        self._hot.put_nowait(connection)
        if fenced != 1:
            raise LeaseLost(claim.execution_id)

    async def _hot_connection(self) -> _HotConnection:
        try:
            return self._hot.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if self._hot_count < HOT_CONNECTIONS:
            self._hot_count += 1
            try:
                return await _HotConnection.open(self._engine, self)
            except BaseException:
                self._hot_count -= 1
                raise
        return await self._hot.get()

    async def close(self) -> None:
        """Returns the kept connections to the pool."""
        while not self._hot.empty():
            await self._hot.get_nowait().discard()

    # -- registry outbox ------------------------------------------------------------------------------------
    async def drain_outbox(
        self, limit: int, send: Callable[[list[OutcomeRecord]], Awaitable[None]]
    ) -> int:
        """Sends up to ``limit`` stored outcomes with ``send`` and deletes them once it returns.

        If ``send`` raises, the rows stay for the next attempt (the registry ignores repeats by id).
        """
        query = outbox.select().order_by(outbox.c.id).limit(limit)
        if not self._postgres:
            # One process: no competing reporter, and the single SQLite writer must not wait on a call.
            async with self._engine.connect() as connection:
                rows = (await connection.execute(query)).all()
            if not rows:
                return 0
            await send([_record_from_json(row.record) for row in rows])
            async with self._write() as connection:
                await connection.execute(outbox.delete().where(outbox.c.id.in_([row.id for row in rows])))
            return len(rows)
        async with self._write() as connection:
            rows = (await connection.execute(query.with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            await send([_record_from_json(row.record) for row in rows])
            await connection.execute(outbox.delete().where(outbox.c.id.in_([row.id for row in rows])))
        return len(rows)
