"""Keeps the leases of the executions this replica runs alive, and tells runs they lost theirs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from workflow_svc.ports import Repository

if TYPE_CHECKING:
    from workflow_svc.run import Run

log = structlog.get_logger("workflow_svc.engine")


class LeaseKeeper:
    """Renews every running execution's lease three times per lease period, in one statement."""

    def __init__(self, repo: Repository, lease_seconds: float, *, running: Mapping[str, Run]) -> None:
        self._repo = repo
        self._lease_seconds = lease_seconds
        self._running = running

    async def renew_once(self) -> None:
        """Renews all leases; runs whose lease another replica took stop, cancelled ones are told why."""
        runs = list(self._running.values())
        if not runs:
            return
        held, cancelled = await self._repo.renew([run.claim for run in runs], time.time(), self._lease_seconds)
        for run in runs:
            if run.execution_id not in held and self._running.get(run.execution_id) is run:
                run.lease_lost()
            elif run.execution_id in cancelled:
                run.request_cancel(await self._repo.cancel_reason(run.execution_id))

    async def loop(self) -> None:
        """Renews until cancelled; a failed renewal (database down) is retried at the next interval."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self.renew_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("lease_renew_failed", error=str(error))
