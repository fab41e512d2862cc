"""Use-cases of the builder: accept, follow, read, list and cancel builds (pipeline.py runs the stages/)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import structlog

from builder_svc import admission
from builder_svc.admission import Cursor
from builder_svc.domain import BUILD_ID_PREFIX, Build, BuildEvent, BuildFilter, BuildState, StartCommand
from builder_svc.ports import Repository
from tdev_common import paging
from tdev_common.clock import from_epoch
from tdev_common.completion import complete
from tdev_common.errors import NotFound, invalid_field
from tdev_common.event_stream import EventHub, stored_then_live
from tdev_common.paging import Page

log = structlog.get_logger(__name__)
WATCH_BATCH = 500


class WorkerControl(Protocol):
    """What the use-cases ask of the replica's build worker."""

    def wake(self) -> None:
        """Look for work now."""

    def cancel_local(self, build_id: str) -> None:
        """Stop this replica's run of a build."""


def new_build_id() -> str:
    """``build_`` and 12 hex digits."""
    return BUILD_ID_PREFIX + uuid.uuid4().hex[:12]


class BuilderService:
    """The builder's use-cases over a repository, the local worker and the event notifier."""

    def __init__(self, repository: Repository, worker: WorkerControl, notifier: EventHub[BuildEvent],
                 defaults: admission.Defaults, *, watch_poll_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time, new_id: Callable[[], str] = new_build_id) -> None:
        self._repository = repository
        self._worker = worker
        self._notifier = notifier
        self._defaults = defaults
        self._poll = watch_poll_seconds
        self._clock = clock
        self._new_id = new_id

    async def start(self, command: StartCommand) -> Build:
        """Accepts a build; it runs in the background (a replayed request id returns the first build).

        Raises:
            InvalidArgument: empty or oversized requirements, bad constraints (every problem listed), a request id
                too long, or one used before for a different request (REQUEST_ID_REUSED).
        """
        requirements = admission.check_requirements(command.requirements, self._defaults.max_requirements_chars)
        constraints = admission.resolve_constraints(command.constraints, self._defaults)
        admission.check_request_id(command.request_id)
        # The clock gives float seconds (it also times leases); the build's times are datetimes.
        now = from_epoch(self._clock())
        build = Build(build_id=self._new_id(), requirements=requirements, constraints=constraints,
                      state=BuildState.PENDING, create_time=now, update_time=now)
        stored, created = await self._repository.insert_build(build, command.request_id, command.fingerprint)
        if created:
            log.info("build_accepted", build_id=stored.build_id, characters=len(requirements))
            self._worker.wake()
        return stored

    async def build_and_watch(self, command: StartCommand) -> AsyncIterator[BuildEvent]:
        """Accepts a build and streams its events until it ends (the build goes on if the caller leaves).

        Raises:
            InvalidArgument: as :meth:`start`.
        """
        # Stored even if the caller leaves meanwhile (tdev_common.completion): never half-written.
        build = await complete(self.start(command))
        async for event in self.watch(build.build_id, 0):
            yield event

    async def get(self, build_id: str) -> Build:
        """One build.

        Raises:
            InvalidArgument: no id. NotFound: no such build.
        """
        admission.check_build_id(build_id)
        build = await self._repository.get_build(build_id)
        if build is None:
            raise NotFound(f'build "{build_id}" does not exist', reason="BUILD_NOT_FOUND",
                           metadata={"build_id": build_id})
        return build

    async def list(self, query: BuildFilter, page_size: int, after: Cursor | None) -> Page[Build]:
        """One page of builds, newest first, after the (create time, id) position."""
        rows = await self._repository.list_builds(query, page_size + 1, after)
        return paging.take(rows, page_size, lambda last: (last.create_time, last.build_id))

    async def cancel(self, build_id: str, reason: str) -> Build:
        """Ends a pending or running build as CANCELLED at once; its worker is fenced out and stopped.

        Raises:
            NotFound: no such build. FailedPrecondition: the build has ended already.
        """
        admission.check_build_id(build_id)
        build, _event = await self._repository.cancel(build_id, reason[:1000], self._clock())
        self._notifier.announce(build_id)
        self._worker.cancel_local(build_id)
        log.info("build_cancelled", build_id=build_id)
        return build

    async def watch(self, build_id: str, after_sequence: int) -> AsyncIterator[BuildEvent]:
        """Stored events after a sequence number, then live ones until the build ends; no gap, no duplicate.

        Raises:
            InvalidArgument: a negative sequence. NotFound: no such build.
        """
        if after_sequence < 0:
            raise invalid_field("after_sequence", "must not be negative")
        await self.get(build_id)

        async def read_after(last: int, limit: int) -> Sequence[BuildEvent]:
            return await self._repository.events_after(build_id, last, limit)

        async def ended(last: int) -> bool:
            current = await self._repository.get_build(build_id)
            return current is None or (current.state.is_terminal and last >= current.last_sequence)

        async for event in stored_then_live(self._notifier, build_id, after_sequence, read_after=read_after,
                                            is_last=lambda event: event.type.is_terminal, ended=ended,
                                            poll_seconds=self._poll, page=WATCH_BATCH):
            yield event
