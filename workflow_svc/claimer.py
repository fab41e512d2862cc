"""Leases executions for this replica: its own new ones at once (woken), unowned or expired ones by polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import structlog

from workflow_svc.domain import Claim
from workflow_svc.ports import Repository

log = structlog.get_logger("workflow_svc.engine")


class Claimer:
    """Claims up to the free slots, each claim bumping the execution's epoch (which fences the old owner)."""

    def __init__(
        self,
        repo: Repository,
        worker_id: str,
        lease_seconds: float,
        interval_seconds: float,
        *,
        reclaim_own: bool,
        running: Mapping[str, object],
        free_slots: Callable[[], int],
        adopt: Callable[[Claim], None],
    ) -> None:
        self._repo = repo
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._interval = interval_seconds
        self._reclaim_own = reclaim_own
        self._running = running
        self._free_slots = free_slots
        self._adopt = adopt
        self._wake = asyncio.Event()
        # Whether unowned work may be waiting for a free slot: someone announced work, or the last claim took
        # all it could. Until then a run's end claims nothing (expired leases are found by the poll), which
        # saves a claim query per execution on a busy replica.
        self._work_may_wait = True

    def wake(self) -> None:
        """Claims at once instead of at the next poll (work was announced)."""
        self._work_may_wait = True
        self._wake.set()

    def slot_freed(self) -> None:
        """A run ended: claims at once if work may be waiting for the slot."""
        if self._work_may_wait:
            self._wake.set()

    async def claim(self, limit: int, *, execution_id: str | None = None, reclaim_own: bool = False) -> list[Claim]:
        """Leases up to ``limit`` executions nobody holds (or whose holder's lease expired) and adopts them.

        Never claims what this replica runs itself: after an outage longer than the lease, that lease has
        expired but nobody else took it, and a new epoch would fence out the live run (which then waited a
        lease period for its orphaned claim to expire). The lease keeper renews such a lease instead: renewal
        and writes are fenced by (owner, epoch), not by the expiry, so the run goes on unharmed.
        """
        claims = await self._repo.claim(
            self._worker_id, time.time(), self._lease_seconds, limit,
            reclaim_own=reclaim_own, execution_id=execution_id, exclude=list(self._running),
        )
        for claim in claims:
            log.info("execution_claimed", execution_id=claim.execution_id, epoch=claim.epoch)
            self._adopt(claim)
        return claims

    async def loop(self) -> None:
        """Claims whenever woken, and every ``interval_seconds`` at the latest, until cancelled."""
        reclaim_own = self._reclaim_own
        while True:
            # Cleared before the poll: a wake-up landing during the poll is kept for the next round.
            self._wake.clear()
            try:
                free = self._free_slots()
                if free > 0:
                    # Cleared before the query: work announced while it runs sets it again.
                    self._work_may_wait = False
                    claims = await self.claim(free, reclaim_own=reclaim_own)
                    if len(claims) >= free:
                        self._work_may_wait = True
                    # A restarted replica takes its own leases back once, at start-up only.
                    reclaim_own = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._work_may_wait = True
                log.warning("claim_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
