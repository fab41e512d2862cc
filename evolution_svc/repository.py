"""The only code that reads and writes the ``evolution`` schema; returns domain objects.

Every write of a worker is fenced by its lease (owner, attempt) and by the run being unfinished, in the
same statement that takes the next event sequence number, so a stale worker's late write is rejected and
sequence numbers have no gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from evolution_svc import codec
from evolution_svc.domain import (
    Candidate,
    CandidateQuery,
    Event,
    EventType,
    EvolutionRun,
    ListQuery,
    RunState,
    StopReason,
)
from evolution_svc.models import CandidateRow, EventRow, PolicyRow, RunRow
from evolution_svc.policies import EvolutionPolicy, Phase, PolicyStatus
from evolution_svc.ports import EventDraft, Lease, LostLease, NewRun, RunUpdate, WorkItem
from tdev_common import paging
from tdev_common.clock import utc_now
from tdev_common.completion import completes
from tdev_common.db import session_factory
from tdev_common.idempotency import check_same_request
from tdev_common.paging import Page

UNFINISHED = (RunState.PENDING.value, RunState.RUNNING.value)


def _event(row: EventRow) -> Event:
    payload = row.payload
    report = payload.get("report")
    promotion = payload.get("promotion")
    return Event(
        sequence=row.sequence,
        run_id=row.run_id,
        type=EventType(row.type),
        time=row.time,
        report=codec.report_from_json(report) if report else None,
        promotion=codec.promotion_from_json(promotion) if promotion else None,
        message=payload.get("message", ""),
        stop_reason=StopReason(payload.get("stop_reason", StopReason.UNSPECIFIED.value)),
    )


def _payload(draft: EventDraft) -> dict[str, object]:
    payload: dict[str, object] = {"message": draft.message, "stop_reason": draft.stop_reason.value}
    if draft.report is not None:
        payload["report"] = codec.report_to_json(draft.report)
    if draft.promotion is not None:
        payload["promotion"] = codec.promotion_to_json(draft.promotion)
    return payload


def _run(row: RunRow, *, reports: tuple[Event, ...] = (), include_code: bool = True) -> EvolutionRun:
    best = codec.candidate_from_json(row.best) if row.best else None
    if best is not None and not include_code:
        best = codec.candidate_from_json(codec.candidate_to_json(best, include_code=False))
    return EvolutionRun(
        run_id=row.run_id,
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        agent_version=row.agent_version,
        suite=codec.suite_from_json(row.suite),
        config=codec.config_from_json(row.config),
        state=RunState(row.state),
        create_time=row.create_time,
        update_time=row.update_time,
        stop_reason=StopReason(row.stop_reason),
        stop_message=row.stop_message,
        generations=tuple(event.report for event in reports if event.report is not None),
        best=best,
        seed_fitness=row.seed_fitness,
        promotion=codec.promotion_from_json(row.promotion) if row.promotion else None,
        error=row.error,
        last_sequence=row.last_sequence,
        automatic=bool(row.automatic),
        start_reason=row.start_reason or "",
    )


def _candidate(row: CandidateRow, *, include_code: bool) -> Candidate:
    return codec.candidate_from_json({**row.body, "code": row.code if include_code else ""})


class SqlRunRepository:
    """RunRepository over SQLAlchemy (Postgres or SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)

    async def insert(self, new: NewRun, owner: str, lease_until: datetime) -> tuple[EvolutionRun, bool]:
        run = new.run
        row = RunRow(
            run_id=run.run_id,
            agent_id=run.agent_id,
            agent_name=run.agent_name,
            agent_version=run.agent_version,
            request_id=new.request_id or None,
            request_fingerprint=(new.fingerprint or None) if new.request_id else None,
            state=run.state.value,
            stop_reason=StopReason.UNSPECIFIED.value,
            stop_message="",
            error="",
            suite=codec.suite_to_json(run.suite),
            config=codec.config_to_json(run.config),
            seed_code=new.seed_code,
            seed_fitness=0.0,
            best=None,
            promotion=None,
            last_sequence=0,
            checkpoint=None,
            checkpoint_generation=0,
            owner=owner,
            lease_until=lease_until,
            attempt=1,
            create_time=run.create_time,
            update_time=run.update_time,
            automatic=run.automatic,
            start_reason=run.start_reason,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            if not new.request_id:
                raise
            async with self._sessions() as session:
                existing = await session.scalar(sa.select(RunRow).where(RunRow.request_id == new.request_id))
            if existing is None:
                raise
            check_same_request(new.request_id, existing.request_fingerprint, new.fingerprint,
                               f'evolution run "{existing.run_id}"')
            return _run(existing), False
        return _run(row), True

    async def get(self, run_id: str, *, include_code: bool) -> EvolutionRun | None:
        async with self._sessions() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                return None
            events = await session.scalars(
                sa.select(EventRow)
                .where(EventRow.run_id == run_id, EventRow.type == EventType.GENERATION_COMPLETED.value)
                .order_by(EventRow.sequence)
            )
            reports = tuple(_event(event) for event in events)
        return _run(row, reports=reports, include_code=include_code)

    async def list_runs(self, query: ListQuery) -> Page[EvolutionRun]:
        """A page of runs, newest first, without reports or code, after ``query.after``."""
        statement = sa.select(RunRow).order_by(RunRow.create_time.desc(), RunRow.run_id.desc())
        if query.agent_id:
            statement = statement.where(RunRow.agent_id == query.agent_id)
        if query.state is not None:
            statement = statement.where(RunRow.state == query.state.value)
        if query.after is not None:
            created, run_id = datetime.fromisoformat(query.after[0]), query.after[1]
            statement = statement.where(
                sa.or_(
                    RunRow.create_time < created,
                    sa.and_(RunRow.create_time == created, RunRow.run_id < run_id),
                )
            )
        async with self._sessions() as session:
            rows = list(await session.scalars(statement.limit(query.page_size + 1)))
        page = paging.take(rows, query.page_size, lambda last: [last.create_time.isoformat(), last.run_id])
        return Page([_run(row, include_code=False) for row in page.items], page.after)

    async def events_after(self, run_id: str, after_sequence: int, limit: int) -> list[Event]:
        async with self._sessions() as session:
            rows = await session.scalars(
                sa.select(EventRow)
                .where(EventRow.run_id == run_id, EventRow.sequence > after_sequence)
                .order_by(EventRow.sequence)
                .limit(limit)
            )
            return [_event(row) for row in rows]

    async def list_candidates(self, query: CandidateQuery) -> Page[Candidate] | None:
        """A page of a run's candidates by (generation, code hash) after ``query.after``; None for an unknown run."""
        statement = (sa.select(CandidateRow).where(CandidateRow.run_id == query.run_id)
                     .order_by(CandidateRow.generation, CandidateRow.code_hash))
        if query.after is not None:
            generation, code_hash = query.after
            statement = statement.where(
                sa.or_(
                    CandidateRow.generation > generation,
                    sa.and_(CandidateRow.generation == generation, CandidateRow.code_hash > code_hash),
                )
            )
        async with self._sessions() as session:
            if await session.get(RunRow, query.run_id) is None:
                return None
            rows = list(await session.scalars(statement.limit(query.page_size + 1)))
        page = paging.take(rows, query.page_size, lambda last: [last.generation, last.code_hash])
        return Page([_candidate(row, include_code=query.include_code) for row in page.items], page.after)

    async def claim(
        self, owner: str, lease_until: datetime, now: datetime, limit: int, *, reclaim_own: bool = False,
        exclude: Sequence[str] = (),
    ) -> list[Lease]:
        free = sa.or_(RunRow.owner.is_(None), RunRow.lease_until < now)
        if reclaim_own:
            free = sa.or_(free, RunRow.owner == owner)
        claimable = sa.and_(RunRow.state.in_(UNFINISHED), free)
        if exclude:
            # Runs the caller works on: their lease may have expired (an outage kept it from renewing), but a
            # new attempt would fence out the caller's own live work.
            claimable = sa.and_(claimable, RunRow.run_id.not_in(list(exclude)))
        async with self._sessions() as session:
            candidates = list(
                await session.scalars(
                    sa.select(RunRow.run_id).where(claimable).order_by(RunRow.create_time).limit(limit)
                )
            )
        leases: list[Lease] = []
        for run_id in candidates:
            async with self._sessions.begin() as session:
                attempt = await session.scalar(
                    sa.update(RunRow)
                    .where(RunRow.run_id == run_id, claimable)
                    .values(owner=owner, lease_until=lease_until, attempt=RunRow.attempt + 1)
                    .returning(RunRow.attempt)
                )
            if attempt is not None:
                leases.append(Lease(run_id, owner, attempt))
        return leases

    def _fenced(self, lease: Lease) -> sa.ColumnElement[bool]:
        return sa.and_(
            RunRow.run_id == lease.run_id,
            RunRow.owner == lease.owner,
            RunRow.attempt == lease.attempt,
            RunRow.state.in_(UNFINISHED),
        )

    async def renew(self, lease: Lease, lease_until: datetime) -> None:
        async with self._sessions.begin() as session:
            result = await session.execute(
                sa.update(RunRow).where(self._fenced(lease)).values(lease_until=lease_until)
            )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise LostLease(lease.run_id)

    async def release(self, lease: Lease) -> None:
        async with self._sessions.begin() as session:
            await session.execute(sa.update(RunRow).where(self._fenced(lease)).values(owner=None, lease_until=None))

    async def load_work(self, run_id: str) -> WorkItem:
        async with self._sessions() as session:
            row = await session.get(RunRow, run_id)
        if row is None:
            raise LostLease(run_id)
        return WorkItem(run=_run(row), seed_code=row.seed_code, checkpoint=row.checkpoint)

    @completes
    async def append(self, lease: Lease, draft: EventDraft, update: RunUpdate) -> Event:
        now = utc_now()
        values: dict[str, object] = {"last_sequence": RunRow.last_sequence + 1, "update_time": now}
        if update.state is not None:
            values["state"] = update.state.value
            if update.state.is_terminal:
                values["owner"] = None
                values["lease_until"] = None
        if update.stop_reason is not None:
            values["stop_reason"] = update.stop_reason.value
        if update.stop_message is not None:
            values["stop_message"] = update.stop_message
        if update.seed_fitness is not None:
            values["seed_fitness"] = update.seed_fitness
        if update.best_json is not None:
            values["best"] = update.best_json
        if update.promotion is not None:
            values["promotion"] = codec.promotion_to_json(update.promotion)
        if update.error is not None:
            values["error"] = update.error
        if update.checkpoint is not None:
            values["checkpoint"] = update.checkpoint
        if update.checkpoint_generation is not None:
            values["checkpoint_generation"] = update.checkpoint_generation
        async with self._sessions.begin() as session:
            sequence = await session.scalar(
                sa.update(RunRow).where(self._fenced(lease)).values(**values).returning(RunRow.last_sequence)
            )
            if sequence is None:
                raise LostLease(lease.run_id)
            row = EventRow(run_id=lease.run_id, sequence=sequence, type=draft.type.value, time=now,
                           payload=_payload(draft))
            session.add(row)
            await self._add_candidates(session, lease.run_id, update.candidates)
        return _event(row)

    @staticmethod
    async def _add_candidates(session: AsyncSession, run_id: str, candidates: Sequence[Candidate]) -> None:
        """Stores the candidates not stored yet: a generation redone after a restart may evaluate a program
        again, and its first record stands."""
        fresh = {candidate.code_hash: candidate for candidate in candidates}
        if not fresh:
            return
        stored = await session.scalars(
            sa.select(CandidateRow.code_hash)
            .where(CandidateRow.run_id == run_id, CandidateRow.code_hash.in_(list(fresh)))
        )
        for code_hash in stored:
            fresh.pop(code_hash, None)
        for candidate in fresh.values():
            body = codec.candidate_to_json(candidate, include_code=False)
            body.pop("code")
            session.add(CandidateRow(run_id=run_id, code_hash=candidate.code_hash, generation=candidate.generation,
                                     code=candidate.code, body=body))

    async def cancel(self, run_id: str, reason: str) -> tuple[EvolutionRun | None, bool]:
        """(run after the call, whether this call cancelled it); (None, False) for an unknown run."""
        now = utc_now()
        message = f"cancelled: {reason}" if reason else "cancelled by a caller"
        async with self._sessions.begin() as session:
            sequence = await session.scalar(
                sa.update(RunRow)
                .where(RunRow.run_id == run_id, RunRow.state.in_(UNFINISHED))
                .values(
                    state=RunState.CANCELLED.value,
                    stop_reason=StopReason.CANCELLED.value,
                    stop_message=message,
                    last_sequence=RunRow.last_sequence + 1,
                    owner=None,
                    lease_until=None,
                    update_time=now,
                )
                .returning(RunRow.last_sequence)
            )
            if sequence is not None:
                draft = EventDraft(EventType.RUN_CANCELLED, message=message, stop_reason=StopReason.CANCELLED)
                session.add(EventRow(run_id=run_id, sequence=sequence, type=draft.type.value, time=now,
                                     payload=_payload(draft)))
        run = await self.get(run_id, include_code=True)
        return run, sequence is not None

    # -- policies ---------------------------------------------------------------------------------------------
    async def run_by_request_id(self, request_id: str) -> EvolutionRun | None:
        """The run started with this idempotency key, if any."""
        async with self._sessions() as session:
            row = await session.scalar(sa.select(RunRow).where(RunRow.request_id == request_id))
        return _run(row, include_code=False) if row is not None else None

    async def put_policy(self, policy: EvolutionPolicy, now: datetime) -> EvolutionPolicy:
        """Creates or replaces a policy's settings; an existing policy keeps its status and lease."""
        spec = codec.policy_spec_to_json(policy)
        async with self._sessions.begin() as session:
            row = await session.get(PolicyRow, policy.agent_id, with_for_update=True)
            if row is None:
                status = replace(PolicyStatus(), phase=Phase.WATCHING if policy.enabled else Phase.DISABLED,
                                 message="watching the triggers" if policy.enabled else "the policy is disabled")
                row = PolicyRow(agent_id=policy.agent_id, enabled=policy.enabled, spec=spec,
                                status=codec.policy_status_to_json(status), owner=None, lease_until=None,
                                create_time=now, update_time=now)
                session.add(row)
            else:
                row.enabled, row.spec, row.update_time = policy.enabled, spec, now
            await session.flush()
            return _policy(row)

    async def get_policy(self, agent_id: str) -> EvolutionPolicy | None:
        """One agent's policy."""
        async with self._sessions() as session:
            row = await session.get(PolicyRow, agent_id)
        return _policy(row) if row is not None else None

    async def list_policies(self, after: str | None, size: int) -> Page[EvolutionPolicy]:
        """A page of policies by agent id, after ``after``."""
        statement = sa.select(PolicyRow).order_by(PolicyRow.agent_id)
        if after is not None:
            statement = statement.where(PolicyRow.agent_id > after)
        async with self._sessions() as session:
            rows = list(await session.scalars(statement.limit(size + 1)))
        page = paging.take(rows, size, lambda last: last.agent_id)
        return Page([_policy(row) for row in page.items], page.after)

    async def delete_policy(self, agent_id: str) -> bool:
        """Removes a policy; False when there was none."""
        async with self._sessions.begin() as session:
            result = await session.execute(sa.delete(PolicyRow).where(PolicyRow.agent_id == agent_id))
        return bool(getattr(result, "rowcount", 0))

    async def claim_policies(self, owner: str, now: datetime, lease_until: datetime, limit: int,
                             agent_id: str | None = None) -> list[str]:
        """Takes the lease of policies nobody else holds (all, or just ``agent_id``); returns their agent ids."""
        free = sa.or_(PolicyRow.owner.is_(None), PolicyRow.lease_until < now, PolicyRow.owner == owner)
        statement = sa.select(PolicyRow.agent_id).where(free).order_by(PolicyRow.update_time).limit(limit)
        if agent_id is not None:
            statement = statement.where(PolicyRow.agent_id == agent_id)
        claimed: list[str] = []
        async with self._sessions.begin() as session:
            for candidate in list(await session.scalars(statement)):
                taken = await session.execute(
                    sa.update(PolicyRow).where(PolicyRow.agent_id == candidate, free)
                    .values(owner=owner, lease_until=lease_until))
                if getattr(taken, "rowcount", 0):
                    claimed.append(candidate)
        return claimed

    async def save_policy_status(self, agent_id: str, owner: str, status: PolicyStatus) -> bool:
        """Stores what the loop did, fenced on the lease: False when another replica holds it now (or the policy
        was deleted)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                sa.update(PolicyRow).where(PolicyRow.agent_id == agent_id, PolicyRow.owner == owner)
                .values(status=codec.policy_status_to_json(status)))
        return bool(getattr(result, "rowcount", 0))

    async def release_policies(self, owner: str, agent_ids: Sequence[str]) -> None:
        """Gives up the leases of these policies."""
        if not agent_ids:
            return
        async with self._sessions.begin() as session:
            await session.execute(
                sa.update(PolicyRow).where(PolicyRow.agent_id.in_(list(agent_ids)), PolicyRow.owner == owner)
                .values(owner=None, lease_until=None))


def _policy(row: PolicyRow) -> EvolutionPolicy:
    return codec.policy_from_json(row.agent_id, row.enabled, row.spec, row.status, row.create_time, row.update_time)
