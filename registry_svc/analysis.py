"""The background analysis of registered versions: claim (leased), analyse, score, store (fenced).

A version starts PENDING; a worker claims it with a lease (RUNNING), runs the analyzer and the static
metrics, and stores SUCCEEDED or FAILED only while it still holds the lease. Work left PENDING, or
RUNNING under an expired lease (a crashed replica), is picked up after a restart or by another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from registry_svc import matching
from registry_svc.domain import Analysis, AnalysisJob, AnalysisReport, AnalysisState
from registry_svc.ports import Analyzer, ChangeListener, Embedder, Repository
from registry_svc.quality import quality_score, static_metrics
from tdev_common.tasks import watch

log = structlog.get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AnalysisWorker:
    """Runs analyses in the background of one service process."""

    def __init__(self, repository: Repository, analyzer: Analyzer, changes: ChangeListener, *,
                 concurrency: int = 2, lease_seconds: float = 120.0, timeout_seconds: float = 60.0,
                 poll_seconds: float = 2.0, embedder: Embedder | None = None,
                 clock: Callable[[], datetime] = _utcnow, owner: str = "", reclaim_own: bool = False) -> None:
        self._repository = repository
        self._analyzer = analyzer
        self._changes = changes
        self._concurrency = max(1, concurrency)
        self._lease_seconds = lease_seconds
        # Keep the timeout below the lease, or another replica takes the work over while this one runs.
        self._timeout_seconds = timeout_seconds
        self._poll_seconds = poll_seconds
        self._embedder = embedder
        self._clock = clock
        self.owner = owner or f"analysis-{uuid.uuid4().hex[:12]}"
        # Analyses held under a stable name before a restart are taken back at the first claim. Later claims
        # happen only once this worker's batch has finished, so they never meet analyses running here.
        self._reclaim_own = reclaim_own
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._analyses: set[asyncio.Task[AnalysisReport]] = set()

    def wake(self) -> None:
        """Asks the worker to look for work now (called after a registration)."""
        self._wake.set()

    def start(self) -> None:
        """Starts the background loop."""
        if self._task is None:
            self._task = watch(asyncio.create_task(self._loop(), name=f"registry-{self.owner}"),
                               event="registry_analysis_loop_failed", owner=self.owner)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stops the loop and hands this worker's unfinished analyses back (PENDING) for a restart.

        Only model calls are cancelled: a database write is let finish, since cutting one off mid-transaction
        can leave an SQLite connection holding the write lock.
        """
        self._stopping.set()
        self._wake.set()
        for analysis in list(self._analyses):
            analysis.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        try:
            released = await self._repository.release_analyses(self.owner)
        except Exception as error:  # the lease expires on its own if the database is gone
            log.warning("analysis_release_failed", error=str(error))
            return
        if released:
            log.info("analysis_released", owner=self.owner, count=released)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the claim, so a registration during it wakes the next wait at once.
            self._wake.clear()
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("analysis_poll_failed", error=str(error))
                handled = 0
            if handled or self._stopping.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def run_once(self) -> int:
        """Claims and runs one batch of analyses; returns how many it handled."""
        jobs = await self._repository.claim_analyses(self.owner, self._clock(), self._lease_seconds,
                                                     self._concurrency, reclaim_own=self._reclaim_own)
        self._reclaim_own = False
        if jobs:
            await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def _run(self, job: AnalysisJob) -> None:
        if self._stopping.is_set():
            return  # claimed as the stop began: released as PENDING by stop()
        started = time.perf_counter()
        await self._changes.agent_changed(job.ref.agent_id, [job.ref.version])  # now RUNNING
        metrics = static_metrics(job.code)
        capabilities_text = search_text = ""
        embedding: tuple[float, ...] | None = None
        analysis_task: asyncio.Task[AnalysisReport] = asyncio.create_task(self._analyzer.analyze(job, metrics))
        self._analyses.add(analysis_task)
        try:
            report = await asyncio.wait_for(analysis_task, self._timeout_seconds)
            capabilities_text = matching.capabilities_text(job.declared_capabilities, report.capabilities)
            search_text = matching.search_text(job.name, job.description, capabilities_text)
            embedding = report.embedding or await self._embedding(search_text)
            analysis = Analysis(
                state=AnalysisState.SUCCEEDED, capabilities=dict(report.capabilities),
                quality_score=quality_score(metrics["static_score"], report.model_quality),
                static_metrics=metrics, models_used=report.models_used, analysis_time=self._clock(),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        except asyncio.CancelledError:
            if self._stopping.is_set():
                return  # stopping: the lease is released below, another run finishes it
            raise
        except Exception as error:
            message = "analysis timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"
            log.warning("analysis_failed", agent_id=job.ref.agent_id, version=job.ref.version, error=message)
            analysis = Analysis(
                state=AnalysisState.FAILED, static_metrics=metrics, analysis_time=self._clock(),
                duration_ms=round((time.perf_counter() - started) * 1000, 3), error=message[:2000],
            )
        finally:
            self._analyses.discard(analysis_task)
        stored = await self._repository.finish_analysis(job, analysis, self._clock(), capabilities_text,
                                                        search_text, embedding)
        if not stored:
            log.warning("analysis_lease_lost", agent_id=job.ref.agent_id, version=job.ref.version)
            return
        await self._changes.agent_changed(job.ref.agent_id, [job.ref.version])
        log.info("analysis_finished", agent_id=job.ref.agent_id, version=job.ref.version,
                 state=analysis.state.value, quality=analysis.quality_score, models=list(analysis.models_used))

    async def _embedding(self, text: str) -> tuple[float, ...] | None:
        if self._embedder is None:
            return None
        try:
            return tuple((await self._embedder.embed([text]))[0])
        except Exception as error:  # search falls back to text matching without it
            log.warning("analysis_embedding_failed", error=str(error))
            return None
