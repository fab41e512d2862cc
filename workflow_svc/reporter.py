"""Sends node outcomes from the durable outbox to the registry, in batches, retrying with backoff."""

from __future__ import annotations

import asyncio

import structlog

from workflow_svc.ports import Registry, Repository

log = structlog.get_logger("workflow_svc.engine")

MAX_RETRY_SECONDS = 30.0


class Reporter:
    """Drains the outbox every interval; the registry ignores repeats, so a failed batch is simply sent again."""

    def __init__(self, repo: Repository, registry: Registry, interval_seconds: float, batch_size: int) -> None:
        self._repo = repo
        self._registry = registry
        self._interval = interval_seconds
        self._batch_size = batch_size

    async def drain(self) -> None:
        """Sends batches until the outbox has less than a full batch left."""
        while await self._repo.drain_outbox(self._batch_size, self._registry.record) == self._batch_size:
            pass

    async def loop(self) -> None:
        """Drains until cancelled, backing off (up to 30 s) while the registry or database is down."""
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.drain()
                delay = self._interval
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The outcomes stay in the outbox; retried with backoff (the registry ignores repeats).
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                log.warning("report_failed", error=str(error), retry_seconds=delay)
