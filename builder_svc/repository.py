"""The only code that reads and writes the ``builder`` schema; it returns domain objects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from builder_svc.admission import Cursor
from builder_svc.domain import (
    ACTIVE_STATES,
    Build,
    BuildError,
    BuildEvent,
    BuildFilter,
    BuildState,
    Claimed,
    Constraints,
    EventType,
    Lease,
    Marking,
    MarkJob,
    NewEvent,
    PackagedAgent,
    Progress,
    ServicePackage,
    Stage,
    StageResult,
    StageState,
    Usage,
)
from builder_svc.models import BuildEventRow, BuildRow
from builder_svc.ports import LeaseLost
from tdev_common.clock import from_epoch, to_epoch
from tdev_common.completion import completes
from tdev_common.errors import FailedPrecondition, NotFound
from tdev_common.idempotency import check_same_request

builds: sa.Table = BuildRow.__table__  # type: ignore[assignment]
events: sa.Table = BuildEventRow.__table__  # type: ignore[assignment]
_ACTIVE = [int(state) for state in ACTIVE_STATES]


def _build(row: Any) -> Build:
    return Build(
        build_id=row.build_id, requirements=row.requirements, constraints=Constraints.from_json(row.constraints),
        state=BuildState(row.state), stages=tuple(StageResult.from_json(s) for s in row.stages or ()),
        package=ServicePackage.from_json(row.package), error=BuildError.from_json(row.error),
        usage=Usage.from_json(row.usage), last_sequence=int(row.last_sequence),
        create_time=from_epoch(float(row.create_time)), update_time=from_epoch(float(row.update_time)),
        registered_agents=tuple(PackagedAgent.from_json(a) for a in row.registered_agents or ()),
        elapsed_seconds=float(row.elapsed_seconds or 0.0), marking=row.marks_state or "",
    )


def _mark_values(now: float) -> dict[str, Any]:
    """The build just ended: its versions are to be marked, at once (a new epoch fences older marking jobs)."""
    return {"marks_state": Marking.PENDING, "marks_due": now, "marks_attempts": 0,
            "marks_epoch": builds.c.marks_epoch + 1, "marks_error": None}


def _event(row: Any) -> BuildEvent:
    return BuildEvent(
        sequence=int(row.sequence), build_id=row.build_id, type=EventType(row.type), time=from_epoch(float(row.time)),
        stage=Stage(row.stage) if row.stage else None, message=row.message, details=dict(row.details or {}),
        duration_ms=float(row.duration_ms), usage=Usage.from_json(row.usage) if row.usage else None,
        error=BuildError.from_json(row.error),
    )


def _event_row(build_id: str, sequence: int, event: NewEvent, now: float) -> dict[str, Any]:
    return {
        "build_id": build_id, "sequence": sequence, "type": int(event.type),
        "stage": int(event.stage) if event.stage else 0, "message": event.message, "details": event.details,
        "duration_ms": event.duration_ms, "usage": event.usage.to_json() if event.usage else None,
        "error": event.error.to_json() if event.error else None, "time": now,
    }


def _progress_values(progress: Progress) -> dict[str, Any]:
    return {
        "state": int(progress.state), "stages": [s.to_json() for s in progress.stages],
        "checkpoint": progress.checkpoint, "usage": progress.usage.to_json(),
        "error": progress.error.to_json() if progress.error else None,
        "package": progress.package.to_json() if progress.package else None,
        "registered_agents": [a.to_json() for a in progress.registered_agents],
        "elapsed_seconds": progress.elapsed_seconds,
    }


class SqlRepository:
    """Builder tables on Postgres or SQLite through one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; queueing writers here beats spinning on busy_timeout.
        self._write_lock: asyncio.Lock | None = None if self._postgres else asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._engine.begin() as connection:
                yield connection
        else:
            async with self._write_lock, self._engine.begin() as connection:
                yield connection

    # -- builds -----------------------------------------------------------------------------------------------
    async def insert_build(self, build: Build, request_id: str, fingerprint: str = "") -> tuple[Build, bool]:
        """Stores a new build; a request id seen before returns the first build and False.

        Raises:
            RequestIdReused: the request id was stored with another request's fingerprint.
        """
        if request_id:
            existing = await self._by_request(request_id, fingerprint)
            if existing is not None:
                return existing, False
        row = {
            "build_id": build.build_id, "requirements": build.requirements,
            "constraints": build.constraints.to_json(), "state": int(build.state), "request_id": request_id or None,
            "request_fingerprint": (fingerprint or None) if request_id else None,
            "stages": [], "checkpoint": {}, "usage": Usage().to_json(), "error": None, "package": None,
            "registered_agents": [], "elapsed_seconds": 0.0, "last_sequence": 0,
            "create_time": to_epoch(build.create_time), "update_time": to_epoch(build.update_time),
            "lease_owner": None, "lease_epoch": 0, "lease_expires": None,
            "marks_state": None, "marks_due": None, "marks_attempts": 0, "marks_epoch": 0, "marks_error": None,
        }
        try:
            async with self._write() as connection:
                await connection.execute(builds.insert().values(**row))
        except sa_exc.IntegrityError:
            existing = await self._by_request(request_id, fingerprint) if request_id else None
            if existing is None:
                raise
            return existing, False
        return build, True

    async def _by_request(self, request_id: str, fingerprint: str) -> Build | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(builds.select().where(builds.c.request_id == request_id))).first()
        if row is None:
            return None
        check_same_request(request_id, row.request_fingerprint, fingerprint, f'build "{row.build_id}"')
        return _build(row)

    async def get_build(self, build_id: str) -> Build | None:
        """One build, or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(builds.select().where(builds.c.build_id == build_id))).first()
        return _build(row) if row else None

    async def list_builds(self, query: BuildFilter, page_size: int, after: Cursor | None) -> list[Build]:
        """Builds newest first (create time, then id), after a cursor."""
        statement = builds.select()
        if query.state is not None:
            statement = statement.where(builds.c.state == int(query.state))
        if after is not None:
            position = sa.tuple_(to_epoch(after[0]), after[1])
            statement = statement.where(sa.tuple_(builds.c.create_time, builds.c.build_id) < position)
        statement = statement.order_by(builds.c.create_time.desc(), builds.c.build_id.desc()).limit(page_size)
        async with self._engine.connect() as connection:
            return [_build(row) for row in await connection.execute(statement)]

    async def states(self, build_ids: Sequence[str]) -> dict[str, BuildState]:
        """The state of each known build."""
        if not build_ids:
            return {}
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                sa.select(builds.c.build_id, builds.c.state).where(builds.c.build_id.in_(list(build_ids))))
            return {row.build_id: BuildState(row.state) for row in rows}

    # -- events -----------------------------------------------------------------------------------------------
    async def events_after(self, build_id: str, after_sequence: int, limit: int) -> list[BuildEvent]:
        """Stored events with a greater sequence, in order."""
        statement = (events.select()
                     .where(events.c.build_id == build_id, events.c.sequence > after_sequence)
                     .order_by(events.c.sequence).limit(limit))
        async with self._engine.connect() as connection:
            return [_event(row) for row in await connection.execute(statement)]

    @completes
    async def append(self, lease: Lease, event: NewEvent, progress: Progress, now: float,
                     lease_seconds: float) -> BuildEvent:
        """Stores an event and the build's progress in one transaction, fenced by the lease; renews it.

        Raises:
            LeaseLost: another worker or a cancellation holds the build now; nothing was written.
        """
        values = _progress_values(progress)
        values.update(last_sequence=builds.c.last_sequence + 1, update_time=now, lease_expires=now + lease_seconds)
        if progress.state.is_terminal:
            values.update(_mark_values(now))  # in the same transaction as the end: the marking cannot be lost
        async with self._write() as connection:
            result = await connection.execute(
                builds.update()
                .where(builds.c.build_id == lease.build_id, builds.c.lease_owner == lease.owner,
                       builds.c.lease_epoch == lease.epoch)
                .values(**values)
                .returning(builds.c.last_sequence)
            )
            sequence = result.scalar_one_or_none()
            if sequence is None:
                raise LeaseLost(f"build {lease.build_id} is no longer held by {lease.owner} (epoch {lease.epoch})")
            row = _event_row(lease.build_id, int(sequence), event, now)
            await connection.execute(events.insert().values(**row))
        return _event(_Plain(row))

    async def cancel(self, build_id: str, reason: str, now: float) -> tuple[Build, BuildEvent]:
        """Ends an active build as cancelled and fences out its worker (new epoch, no owner).

        Raises:
            NotFound: no such build.
            FailedPrecondition: the build has ended already.
        """
        select = builds.select().where(builds.c.build_id == build_id)
        if self._postgres:
            select = select.with_for_update()
        async with self._write() as connection:
            row = (await connection.execute(select)).first()
            if row is None:
                raise NotFound(f'build "{build_id}" does not exist', reason="BUILD_NOT_FOUND",
                               metadata={"build_id": build_id})
            build = _build(row)
            if build.state.is_terminal:
                raise FailedPrecondition(
                    f"build {build_id} is {build.state.name} already; only pending or running builds can be cancelled",
                    reason="BUILD_ENDED", metadata={"build_id": build_id, "state": build.state.name})
            running = next((s for s in reversed(build.stages) if s.state == StageState.RUNNING), None)
            stage = running.stage if running else None
            message = f"cancelled: {reason}" if reason else "cancelled by a caller"
            error = BuildError("CANCELLED", message, stage)
            stages = [
                (StageResult(s.stage, StageState.FAILED, s.attempt, "cancelled", s.details, s.duration_ms, s.usage)
                 if s.state == StageState.RUNNING else s).to_json()
                for s in build.stages
            ]
            sequence = build.last_sequence + 1
            await connection.execute(
                builds.update().where(builds.c.build_id == build_id).values(
                    state=int(BuildState.CANCELLED), error=error.to_json(), stages=stages, last_sequence=sequence,
                    lease_epoch=builds.c.lease_epoch + 1, lease_owner=None, lease_expires=None, update_time=now,
                    **_mark_values(now)))
            event_row = _event_row(build_id, sequence, NewEvent(
                EventType.BUILD_CANCELLED, stage, message, {"registered_agents": [
                    a.to_json() for a in build.registered_agents]}, build.elapsed_seconds * 1000, build.usage, error),
                now)
            await connection.execute(events.insert().values(**event_row))
            updated = (await connection.execute(builds.select().where(builds.c.build_id == build_id))).one()
        return _build(updated), _event(_Plain(event_row))

    # -- marking the registry versions of ended builds -----------------------------------------------------------
    async def claim_marks(self, now: float, hold_seconds: float, limit: int) -> list[MarkJob]:
        """Ended builds whose versions are due to be marked; each is held for ``hold_seconds`` (another replica
        takes it over only after that), and comes with the epoch that fences the job's result."""
        if limit <= 0:
            return []
        query = (sa.select(builds.c.build_id)
                 .where(builds.c.marks_state == Marking.PENDING, builds.c.marks_due <= now)
                 .order_by(builds.c.marks_due).limit(limit))
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        async with self._write() as connection:
            ids = [row.build_id for row in await connection.execute(query)]
            if not ids:
                return []
            await connection.execute(builds.update().where(builds.c.build_id.in_(ids))
                                     .values(marks_due=now + hold_seconds))
            rows = await connection.execute(builds.select().where(builds.c.build_id.in_(ids)))
            return [MarkJob(_build(row), int(row.marks_epoch), int(row.marks_attempts)) for row in rows]

    async def finish_marks(self, job: MarkJob, *, error: str = "", retry_at: float | None = None) -> bool:
        """Records a marking job's end: done (no error), due again at ``retry_at``, or given up (an error and no
        retry). False when the build was asked to be marked again meanwhile (the newer request stays pending)."""
        if not error:
            values: dict[str, Any] = {"marks_state": Marking.DONE, "marks_due": None, "marks_error": None}
        elif retry_at is not None:
            values = {"marks_due": retry_at, "marks_error": error[:2000],
                      "marks_attempts": builds.c.marks_attempts + 1}
        else:
            values = {"marks_state": Marking.FAILED, "marks_due": None, "marks_error": error[:2000],
                      "marks_attempts": builds.c.marks_attempts + 1}
        async with self._write() as connection:
            result = await connection.execute(
                builds.update().where(builds.c.build_id == job.build.build_id, builds.c.marks_epoch == job.epoch,
                                      builds.c.marks_state == Marking.PENDING).values(**values))
        return bool(result.rowcount == 1)

    async def mark_again(self, build_id: str, now: float) -> bool:
        """Queues an ended build's versions to be marked once more (its fenced-out run may have registered one
        after the first marking); False when the build has not ended."""
        async with self._write() as connection:
            result = await connection.execute(
                builds.update().where(builds.c.build_id == build_id,
                                      builds.c.state.in_([int(s) for s in BuildState if s.is_terminal]))
                .values(**_mark_values(now)))
        return bool(result.rowcount == 1)

    # -- leases -----------------------------------------------------------------------------------------------
    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool,
                    build_id: str | None = None, exclude: Sequence[str] = ()) -> list[Claimed]:
        """Leases up to ``limit`` active builds that are unowned or expired (or, with ``reclaim_own``, held by
        ``owner`` from before a restart), except those in ``exclude`` (running here); bumps their epochs."""
        if limit <= 0:
            return []
        free = sa.or_(builds.c.lease_owner.is_(None), builds.c.lease_expires < now)
        if reclaim_own:
            free = sa.or_(free, builds.c.lease_owner == owner)
        query = sa.select(builds.c.build_id).where(builds.c.state.in_(_ACTIVE), free)
        if build_id is not None:
            query = query.where(builds.c.build_id == build_id)
        if exclude:
            query = query.where(builds.c.build_id.not_in(list(exclude)))
        query = query.order_by(builds.c.create_time).limit(limit)
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        async with self._write() as connection:
            ids = [row.build_id for row in await connection.execute(query)]
            if not ids:
                return []
            await connection.execute(
                builds.update().where(builds.c.build_id.in_(ids))
                .values(lease_owner=owner, lease_epoch=builds.c.lease_epoch + 1, lease_expires=now + lease_seconds))
            rows = await connection.execute(builds.select().where(builds.c.build_id.in_(ids))
                                            .order_by(builds.c.create_time))
            return [Claimed(_build(row), dict(row.checkpoint or {}), Lease(row.build_id, owner, int(row.lease_epoch)))
                    for row in rows]

    async def renew(self, leases: Sequence[Lease], now: float, lease_seconds: float) -> set[str]:
        """Extends leases still held; returns the ids still held."""
        if not leases:
            return set()
        owner = leases[0].owner
        keys = [(lease.build_id, lease.epoch) for lease in leases]
        async with self._write() as connection:
            result = await connection.execute(
                builds.update()
                .where(builds.c.lease_owner == owner, builds.c.state.in_(_ACTIVE),
                       sa.tuple_(builds.c.build_id, builds.c.lease_epoch).in_(keys))
                .values(lease_expires=now + lease_seconds)
                .returning(builds.c.build_id)
            )
            return {row.build_id for row in result}

    async def release(self, lease: Lease) -> None:
        """Gives a lease back (graceful stop) so another worker may resume the build at once."""
        async with self._write() as connection:
            await connection.execute(
                builds.update()
                .where(builds.c.build_id == lease.build_id, builds.c.lease_owner == lease.owner,
                       builds.c.lease_epoch == lease.epoch)
                .values(lease_owner=None, lease_expires=None))


class _Plain:
    """Attribute access over a row dict (an event just written, read back without a query)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
