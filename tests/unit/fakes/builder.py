"""In-memory fakes of builder_svc's ports the use-cases need: the repository and the local worker.

``FakeRepository`` keeps what ``SqlRepository`` promises: a request id is stored with its request's fingerprint,
seen again with the same one (or with none on either side) it returns the first build and False, with a
different one it raises RequestIdReused and stores nothing; lists are newest first after a (create_time, id)
cursor with the caller's limit, leases are (owner, epoch) pairs bumped on every claim and on cancellation, every
``append`` is fenced by them (LeaseLost), and ``cancel`` raises the domain errors NotFound (BUILD_NOT_FOUND) /
FailedPrecondition (BUILD_ENDED) itself, as the SQL repository does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from builder_svc.admission import Cursor
from builder_svc.domain import (
    ACTIVE_STATES,
    JSON,
    Build,
    BuildError,
    BuildEvent,
    BuildFilter,
    BuildState,
    Claimed,
    EventType,
    Lease,
    Marking,
    MarkJob,
    NewEvent,
    Progress,
    StageResult,
    StageState,
)
from builder_svc.ports import LeaseLost
from tdev_common.clock import from_epoch
from tdev_common.errors import FailedPrecondition, NotFound
from tdev_common.idempotency import check_same_request


@dataclass
class _BuildRow:
    build: Build
    request_id: str = ""
    fingerprint: str | None = None
    checkpoint: JSON = field(default_factory=dict)
    owner: str | None = None
    epoch: int = 0
    expires: float | None = None
    marks_state: str | None = None
    marks_due: float | None = None
    marks_attempts: int = 0
    marks_epoch: int = 0
    marks_error: str | None = None


class FakeRepository:
    """builder_svc.ports.Repository in dicts."""

    def __init__(self) -> None:
        self.rows: dict[str, _BuildRow] = {}
        self.events: dict[str, list[BuildEvent]] = {}

    def _row(self, build_id: str) -> _BuildRow | None:
        return self.rows.get(build_id)

    def _view(self, row: _BuildRow) -> Build:
        return replace(row.build, marking=row.marks_state or "")

    def _ended(self, row: _BuildRow, now: float) -> None:
        # The build just ended: its versions are due to be marked, and a new epoch fences older marking jobs.
        row.marks_state, row.marks_due, row.marks_attempts = Marking.PENDING, now, 0
        row.marks_epoch, row.marks_error = row.marks_epoch + 1, None

    # -- builds -----------------------------------------------------------------------------------------
    async def insert_build(self, build: Build, request_id: str, fingerprint: str = "") -> tuple[Build, bool]:
        if request_id:
            existing = next((r for r in self.rows.values() if r.request_id == request_id), None)
            if existing is not None:
                check_same_request(request_id, existing.fingerprint, fingerprint, f'build "{existing.build.build_id}"')
                return self._view(existing), False
        if build.build_id in self.rows:
            raise KeyError(f"duplicate build id {build.build_id}")
        self.rows[build.build_id] = _BuildRow(build, request_id, (fingerprint or None) if request_id else None)
        self.events[build.build_id] = []
        return build, True

    async def get_build(self, build_id: str) -> Build | None:
        row = self._row(build_id)
        return None if row is None else self._view(row)

    async def list_builds(self, query: BuildFilter, page_size: int, after: Cursor | None) -> list[Build]:
        builds = [self._view(r) for r in self.rows.values() if query.state is None or r.build.state == query.state]
        builds.sort(key=lambda b: (b.create_time, b.build_id), reverse=True)
        if after is not None:
            builds = [b for b in builds if (b.create_time, b.build_id) < tuple(after)]
        return builds[:page_size]

    async def states(self, build_ids: Sequence[str]) -> dict[str, BuildState]:
        return {i: self.rows[i].build.state for i in build_ids if i in self.rows}

    # -- events -----------------------------------------------------------------------------------------
    async def events_after(self, build_id: str, after_sequence: int, limit: int) -> list[BuildEvent]:
        return [e for e in self.events.get(build_id, ()) if e.sequence > after_sequence][:limit]

    def _store_event(self, build_id: str, sequence: int, event: NewEvent, now: float) -> BuildEvent:
        stored = BuildEvent(sequence=sequence, build_id=build_id, type=event.type, time=from_epoch(now),
                            stage=event.stage,
                            message=event.message, details=dict(event.details), duration_ms=event.duration_ms,
                            usage=event.usage, error=event.error)
        self.events[build_id].append(stored)
        return stored

    async def append(self, lease: Lease, event: NewEvent, progress: Progress, now: float,
                     lease_seconds: float) -> BuildEvent:
        row = self._row(lease.build_id)
        if row is None or row.owner != lease.owner or row.epoch != lease.epoch:
            raise LeaseLost(f"build {lease.build_id} is no longer held by {lease.owner} (epoch {lease.epoch})")
        sequence = row.build.last_sequence + 1
        row.build = replace(row.build, state=progress.state, stages=progress.stages, usage=progress.usage,
                            error=progress.error, package=progress.package,
                            registered_agents=progress.registered_agents, elapsed_seconds=progress.elapsed_seconds,
                            last_sequence=sequence, update_time=from_epoch(now))
        row.checkpoint, row.expires = dict(progress.checkpoint), now + lease_seconds
        if progress.state.is_terminal:
            self._ended(row, now)
        return self._store_event(lease.build_id, sequence, event, now)

    async def cancel(self, build_id: str, reason: str, now: float) -> tuple[Build, BuildEvent | None]:
        row = self._row(build_id)
        if row is None:
            raise NotFound(f'build "{build_id}" does not exist', reason="BUILD_NOT_FOUND",
                           metadata={"build_id": build_id})
        build = row.build
        if build.state.is_terminal:
            raise FailedPrecondition(
                f"build {build_id} is {build.state.name} already; only pending or running builds can be cancelled",
                reason="BUILD_ENDED", metadata={"build_id": build_id, "state": build.state.name})
        running = next((s for s in reversed(build.stages) if s.state == StageState.RUNNING), None)
        stage = running.stage if running else None
        message = f"cancelled: {reason}" if reason else "cancelled by a caller"
        error = BuildError("CANCELLED", message, stage)
        stages = tuple(
            StageResult(s.stage, StageState.FAILED, s.attempt, "cancelled", s.details, s.duration_ms, s.usage)
            if s.state == StageState.RUNNING else s for s in build.stages)
        sequence = build.last_sequence + 1
        row.build = replace(build, state=BuildState.CANCELLED, error=error, stages=stages, last_sequence=sequence,
                            update_time=from_epoch(now))
        row.owner, row.epoch, row.expires = None, row.epoch + 1, None
        self._ended(row, now)
        event = self._store_event(build_id, sequence, NewEvent(
            EventType.BUILD_CANCELLED, stage, message,
            {"registered_agents": [a.to_json() for a in build.registered_agents]},
            build.elapsed_seconds * 1000, build.usage, error), now)
        return self._view(row), event

    # -- marking ----------------------------------------------------------------------------------------
    async def claim_marks(self, now: float, hold_seconds: float, limit: int) -> list[MarkJob]:
        if limit <= 0:
            return []
        due = sorted((r for r in self.rows.values() if r.marks_state == Marking.PENDING
                      and r.marks_due is not None and r.marks_due <= now), key=lambda r: r.marks_due or 0.0)[:limit]
        for row in due:
            row.marks_due = now + hold_seconds
        return [MarkJob(self._view(row), row.marks_epoch, row.marks_attempts) for row in due]

    async def finish_marks(self, job: MarkJob, *, error: str = "", retry_at: float | None = None) -> bool:
        row = self._row(job.build.build_id)
        if row is None or row.marks_epoch != job.epoch or row.marks_state != Marking.PENDING:
            return False
        if not error:
            row.marks_state, row.marks_due, row.marks_error = Marking.DONE, None, None
        elif retry_at is not None:
            row.marks_due, row.marks_error, row.marks_attempts = retry_at, error[:2000], row.marks_attempts + 1
        else:
            row.marks_state, row.marks_due, row.marks_error = Marking.FAILED, None, error[:2000]
            row.marks_attempts += 1
        return True

    async def mark_again(self, build_id: str, now: float) -> bool:
        row = self._row(build_id)
        if row is None or not row.build.state.is_terminal:
            return False
        self._ended(row, now)
        return True

    # -- leases -----------------------------------------------------------------------------------------
    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool,
                    build_id: str | None = None, exclude: Sequence[str] = ()) -> list[Claimed]:
        if limit <= 0:
            return []
        claimed: list[Claimed] = []
        for row in sorted(self.rows.values(), key=lambda r: r.build.create_time):
            if len(claimed) == limit:
                break
            build = row.build
            free = row.owner is None or (row.expires is not None and row.expires < now) or (
                reclaim_own and row.owner == owner)
            if (build.state not in ACTIVE_STATES or not free or build.build_id in exclude
                    or (build_id is not None and build.build_id != build_id)):
                continue
            row.owner, row.epoch, row.expires = owner, row.epoch + 1, now + lease_seconds
            claimed.append(Claimed(self._view(row), dict(row.checkpoint), Lease(build.build_id, owner, row.epoch)))
        return claimed

    async def renew(self, leases: Sequence[Lease], now: float, lease_seconds: float) -> set[str]:
        held = set()
        for lease in leases:
            row = self._row(lease.build_id)
            if (row is not None and row.owner == lease.owner and row.epoch == lease.epoch
                    and row.build.state in ACTIVE_STATES):
                row.expires = now + lease_seconds
                held.add(lease.build_id)
        return held

    async def release(self, lease: Lease) -> None:
        row = self._row(lease.build_id)
        if row is not None and row.owner == lease.owner and row.epoch == lease.epoch:
            row.owner, row.expires = None, None


class RecordingWorker:
    """builder_svc.service.WorkerControl that remembers what the use-cases asked of it."""

    def __init__(self) -> None:
        self.wakes = 0
        self.cancelled: list[str] = []

    def wake(self) -> None:
        self.wakes += 1

    def cancel_local(self, build_id: str) -> None:
        self.cancelled.append(build_id)
