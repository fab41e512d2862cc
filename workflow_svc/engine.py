"""The execution engine of one replica: the parts that lease executions and the runs they drive.

:class:`Engine` composes a :class:`~workflow_svc.claimer.Claimer` (leases executions nobody holds: this
replica's own new ones at once, unowned or expired ones by polling), a
:class:`~workflow_svc.lease_keeper.LeaseKeeper` (keeps the leases of running executions alive), a
:class:`~workflow_svc.reporter.Reporter` (sends node outcomes to the registry from the durable outbox) and the
:class:`~workflow_svc.agent_cache.AgentCache`; each execution is a :class:`~workflow_svc.run.Run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from tdev_common.tasks import watch
from workflow_svc.agent_cache import AgentCache, WorkflowCache
from workflow_svc.bus import EventBus
from workflow_svc.claimer import Claimer
from workflow_svc.domain import AgentInfo, AliasTarget, Claim, Execution, NodeSpec, Workflow
from workflow_svc.lease_keeper import LeaseKeeper
from workflow_svc.ports import AgentRunner, Registry, Repository
from workflow_svc.reporter import Reporter
from workflow_svc.run import Run, backoff_seconds

__all__ = ["Engine", "EngineSettings", "backoff_seconds"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs (from WorkflowSettings)."""

    worker_id: str
    reclaim_own: bool
    lease_seconds: float
    claim_interval_seconds: float
    max_active_executions: int
    default_concurrency: int = field(metadata={"setting": "max_concurrency"})
    default_timeout_seconds: float
    inline_output_bytes: int
    report_interval_seconds: float
    report_batch_size: int
    agent_cache_size: int
    flush_interval_seconds: float = 0.01


# How stale an alias may be when an execution starts: a promotion or rollback reaches new executions within it.
ALIAS_TTL_SECONDS = 1.0


class Engine:
    """Runs the executions this replica leases."""

    def __init__(
        self,
        settings: EngineSettings,
        repo: Repository,
        registry: Registry,
        runner: AgentRunner,
        bus: EventBus,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.registry = registry
        self.runner = runner
        self.bus = bus
        self.rng = random.Random()
        self.runs: dict[str, Run] = {}
        self._closing = False
        self._agents = AgentCache(registry, settings.agent_cache_size)
        # Aliases per agent with the monotonic time they were read: an alias moves rarely, an execution starts often.
        self._aliases: dict[str, tuple[float, dict[str, AliasTarget]]] = {}
        self._workflows = WorkflowCache(repo)
        self._claimer = Claimer(
            repo, settings.worker_id, settings.lease_seconds, settings.claim_interval_seconds,
            reclaim_own=settings.reclaim_own, running=self.runs, free_slots=self._free_slots, adopt=self.adopt,
        )
        self._lease_keeper = LeaseKeeper(repo, settings.lease_seconds, running=self.runs)
        self._reporter = Reporter(repo, registry, settings.report_interval_seconds, settings.report_batch_size)
        self._loops: list[asyncio.Task[None]] = []
        bus.on_cancel = self.cancel
        bus.on_work = self._claimer.wake

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Starts the claim, lease and report loops."""
        self._loops = [
            watch(asyncio.create_task(loop(), name=name), event="workflow_loop_failed", loop=name)
            for loop, name in ((self._claimer.loop, "workflow-claim"), (self._lease_keeper.loop, "workflow-lease"),
                               (self._reporter.loop, "workflow-report"))
        ]

    async def close(self) -> None:
        """Stops every run and gives its lease back, so another replica resumes it at once."""
        self._closing = True
        for loop in self._loops:
            loop.cancel()
        runs = list(self.runs.values())
        for run in runs:
            run.abort()
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            # Each run commits what it has (fewer re-runs for the next owner), then stops its sandboxes.
            _, slow = await asyncio.wait(tasks, timeout=5.0)
            for task in slow:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for run in runs:
            with contextlib.suppress(Exception):
                await self.repo.release(run.claim)
        await asyncio.gather(*self._loops, return_exceptions=True)

    @property
    def has_capacity(self) -> bool:
        """True when this replica may take another execution now."""
        return not self._closing and len(self.runs) < self.settings.max_active_executions

    def runs_locally(self, execution_id: str) -> bool:
        """True while this replica runs the execution (holds its lease and has not stopped it)."""
        run = self.runs.get(execution_id)
        return run is not None and not run.aborted

    def _free_slots(self) -> int:
        return 0 if self._closing else self.settings.max_active_executions - len(self.runs)

    async def claim(self, limit: int, *, execution_id: str | None = None, reclaim_own: bool = False) -> list[Claim]:
        """Leases up to ``limit`` executions nobody holds (or whose holder's lease expired) and runs them."""
        return await self._claimer.claim(limit, execution_id=execution_id, reclaim_own=reclaim_own)

    def adopt(self, claim: Claim, execution: Execution | None = None) -> None:
        """Starts running an execution this worker has just leased.

        ``execution`` is the execution as just stored by this replica (nothing run yet), which saves the
        run reading it back; without it the run reads the stored state (resumes, claims by polling).
        """
        if claim.execution_id in self.runs or self._closing:
            return
        run = Run(self, claim, execution)
        self.runs[claim.execution_id] = run
        run.task = watch(asyncio.create_task(run.run(), name=f"run-{claim.execution_id}"),
                         event="execution_run_failed", execution_id=claim.execution_id)

    def forget(self, run: Run) -> None:
        """Called by a run when it ends."""
        if self.runs.get(run.execution_id) is run:
            del self.runs[run.execution_id]
            self._claimer.slot_freed()

    def cancel(self, execution_id: str, reason: str) -> None:
        """Cancels a locally running execution (no-op when another replica runs it)."""
        run = self.runs.get(execution_id)
        if run is not None:
            run.request_cancel(reason)

    async def cancel_reason(self, execution_id: str) -> str:
        """The stored reason of a requested cancellation."""
        return await self.repo.cancel_reason(execution_id)

    # -- caches -----------------------------------------------------------------------------------------------
    async def workflow_or_none(self, workflow_id: str) -> Workflow | None:
        """A stored workflow (immutable, so cached), or None."""
        return await self._workflows.get_or_none(workflow_id)

    async def workflow(self, workflow_id: str) -> Workflow:
        """A stored workflow; KeyError when it does not exist."""
        return await self._workflows.get(workflow_id)

    def prefetch(self, nodes: Any) -> None:
        """Starts fetching every agent a run needs, once per version."""
        self._agents.prefetch(nodes)

    async def aliases(self, agent_id: str) -> dict[str, AliasTarget]:
        """The agent's aliases, read from the registry at most once per ALIAS_TTL_SECONDS."""
        now = time.monotonic()
        cached = self._aliases.get(agent_id)
        if cached is not None and now - cached[0] < ALIAS_TTL_SECONDS:
            return cached[1]
        targets = await self.registry.aliases(agent_id)
        self._aliases[agent_id] = (now, targets)
        return targets

    async def agent(self, node: NodeSpec) -> AgentInfo:
        """The pinned agent version with its code (fetched from the registry once per version)."""
        return await self._agents.get(node)
