"""Runs builds on this replica: claims them under leases, resumes unfinished ones, renews, releases on stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from builder_svc.domain import BuildEvent, BuildState, Claimed, Lease, NewEvent, Progress
from builder_svc.marking import LabelMarker
from builder_svc.pipeline import BuildRun, Pipeline
from builder_svc.ports import LeaseLost, Repository
from tdev_common.event_stream import EventHub
from tdev_common.tasks import watch

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """Leases and capacity of one replica."""

    worker_id: str
    reclaim_own: bool = False
    lease_seconds: float = 15.0
    claim_interval_seconds: float = 1.0
    max_active_builds: int = 8


@dataclass
class _Running:
    lease: Lease
    run: BuildRun | None
    task: asyncio.Task[None]


class BuildWorker:
    """Claims builds (new ones at once, orphaned ones on its interval) and runs each in a task."""

    def __init__(self, settings: WorkerSettings, repository: Repository, pipeline: Pipeline,
                 notifier: EventHub[BuildEvent], marker: LabelMarker, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._repository = repository
        self._pipeline = pipeline
        self._notifier = notifier
        self._marker = marker
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Own leases from before a restart are taken back once, at start; later they are this run's own.
        self._reclaim_own = settings.reclaim_own

    @property
    def worker_id(self) -> str:
        """This replica's name in leases."""
        return self._settings.worker_id

    def start(self) -> None:
        """Starts the claim and renewal loops."""
        # Each loop's failure is logged when it happens, not only noticed (or not) when close() gathers them.
        self._tasks = [watch(asyncio.create_task(loop(), name=name), event="builder_loop_failed", loop=name)
                       for loop, name in ((self._claim_loop, "builder-claims"), (self._renew_loop, "builder-leases"))]

    def wake(self) -> None:
        """Looks for work now (a build was just accepted)."""
        self._wake.set()

    def cancel_local(self, build_id: str) -> None:
        """Stops this replica's run of a build a caller cancelled (its writes are fenced out already) and has the
        versions it registered marked cancelled now."""
        running = self._running.get(build_id)
        if running is not None:
            if running.run is not None:
                running.run.cancelled = True
            running.task.cancel()
        self._marker.wake()

    async def close(self) -> None:
        """Stops every run and gives its lease back, so a restarted or other replica resumes it at once."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        running = list(self._running.values())
        for item in running:
            item.task.cancel()
        await asyncio.gather(*self._tasks, *(item.task for item in running), return_exceptions=True)
        for item in running:
            with contextlib.suppress(Exception):
                await self._repository.release(item.lease)

    async def _claim_loop(self) -> None:
        while not self._closing:
            # Cleared before the claim, so a build started during it wakes the next wait at once.
            self._wake.clear()
            try:
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("build_claim_failed", worker_id=self.worker_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.claim_interval_seconds)

    async def _claim(self) -> None:
        capacity = self._settings.max_active_builds - len(self._running)
        if capacity <= 0:
            return
        claimed = await self._repository.claim(self.worker_id, self._clock(), self._settings.lease_seconds, capacity,
                                               reclaim_own=self._reclaim_own, exclude=list(self._running))
        self._reclaim_own = False
        for item in claimed:
            if item.build.build_id in self._running:
                continue
            # _run leaves _running before it ends, so once it has nobody else would retrieve its failure.
            task = watch(asyncio.create_task(self._run(item), name=f"build-{item.build.build_id}"),
                         event="build_run_failed", expected=(LeaseLost,), build_id=item.build.build_id)
            self._running[item.build.build_id] = _Running(item.lease, None, task)

    async def _run(self, claimed: Claimed) -> None:
        build = claimed.build
        lease = claimed.lease

        async def record(event: NewEvent, progress: Progress) -> None:
            await self._repository.append(lease, event, progress, self._clock(), self._settings.lease_seconds)
            self._notifier.announce(build.build_id)

        progress = Progress(state=build.state, stages=build.stages, checkpoint=claimed.checkpoint, usage=build.usage,
                            elapsed_seconds=build.elapsed_seconds, error=build.error, package=build.package,
                            registered_agents=build.registered_agents)
        run = BuildRun(build, progress, record)
        self._running[build.build_id].run = run
        log.info("build_run_started", build_id=build.build_id, worker_id=self.worker_id, epoch=lease.epoch)
        fenced = False
        try:
            await self._pipeline.run(run)
        except LeaseLost:
            fenced = True
            log.info("build_lease_lost", build_id=build.build_id, worker_id=self.worker_id)
        except asyncio.CancelledError:
            fenced = run.cancelled
            log.info("build_run_stopped", build_id=build.build_id, cancelled=run.cancelled)
        except Exception:
            log.exception("build_run_crashed", build_id=build.build_id)
        finally:
            self._running.pop(build.build_id, None)
            self._notifier.announce(build.build_id)
            if not self._closing:
                self._wake.set()
        if fenced:
            # Fenced out (cancelled, maybe elsewhere): a version this run registered after the build ended was
            # not recorded with it, so mark the build's versions once more now that the run has stopped.
            try:
                await self._marker.again(build.build_id)
            except Exception:
                log.exception("build_marking_request_failed", build_id=build.build_id)
        else:
            self._marker.wake()

    async def _renew_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        while not self._closing:
            await asyncio.sleep(interval)
            leases = [item.lease for item in self._running.values()]
            if not leases:
                continue
            try:
                held = await self._repository.renew(leases, self._clock(), self._settings.lease_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("build_lease_renewal_failed", worker_id=self.worker_id)
                continue
            for lease in leases:
                item = self._running.get(lease.build_id)
                if lease.build_id not in held and item is not None and item.lease == lease:
                    log.info("build_lease_gone", build_id=lease.build_id)
                    states = await self._repository.states([lease.build_id])
                    if item.run is not None and states.get(lease.build_id) == BuildState.CANCELLED:
                        item.run.cancelled = True  # cancelled through another replica: stop its executions too
                    item.task.cancel()
