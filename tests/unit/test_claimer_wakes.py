"""The claimer queries for work when work may wait: after an announcement, or after a claim that took all it
could; a run's end alone costs no claim query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workflow_svc.claimer import Claimer
from workflow_svc.domain import Claim

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]


class Waiting:
    """Unowned executions in storage; each claim query takes up to ``limit`` of them."""

    def __init__(self, count: int) -> None:
        self.ids = [f"ex_{i}" for i in range(count)]
        self.queries = 0

    async def claim(self, worker_id: str, now: float, lease_seconds: float, limit: int, **_: Any) -> list[Claim]:
        self.queries += 1
        taken, self.ids = self.ids[:limit], self.ids[limit:]
        return [Claim(execution_id, worker_id, 1) for execution_id in taken]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_run_end_claims_only_when_work_may_wait() -> None:
    storage = Waiting(0)
    running: dict[str, object] = {}
    free = [4]

    def adopt(claim: Claim) -> None:
        running[claim.execution_id] = claim

    claimer = Claimer(storage, "w", 30.0, 60.0, reclaim_own=False, running=running,  # type: ignore[arg-type]
                      free_slots=lambda: free[0], adopt=adopt)
    loop = asyncio.create_task(claimer.loop())
    try:
        await _settle()
        assert storage.queries == 1  # the first round, at start

        claimer.slot_freed()  # nothing waits: the last claim found less than it could take
        await _settle()
        assert storage.queries == 1

        free[0] = 0  # full; work is announced (stored unowned here, or elsewhere)
        storage.ids = ["ex_a", "ex_b"]
        claimer.wake()
        await _settle()
        assert storage.queries == 1  # no free slot: nothing to ask for

        free[0] = 1  # a run ended: the waiting work is claimed at once, not at the next poll
        claimer.slot_freed()
        await _settle()
        assert (storage.queries, sorted(running)) == (2, ["ex_a"])

        claimer.slot_freed()  # that claim took all it could, so more may wait
        await _settle()
        assert (storage.queries, sorted(running)) == (3, ["ex_a", "ex_b"])
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
