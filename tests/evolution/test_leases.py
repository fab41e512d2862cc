"""The executor's leases: a replica renews what it works on and never claims it again (unit, no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from evolution_svc.executor import ExecutorSettings, RunExecutor
from evolution_svc.ports import Lease, LostLease
from tdev_common.event_stream import EventHub

pytestmark = pytest.mark.unit  # no I/O


class OneRun:
    """The lease columns of one unfinished run whose lease has always expired by the time anyone claims it (as
    after a database outage longer than the lease); its work never ends, so it stays running here."""

    def __init__(self, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        self.attempt = 1
        self.claims: list[tuple[bool, tuple[str, ...]]] = []
        self.renewals = 0

    async def claim(self, owner: str, lease_until: datetime, now: datetime, limit: int, *,
                    reclaim_own: bool = False, exclude: Sequence[str] = ()) -> list[Lease]:
        self.claims.append((reclaim_own, tuple(exclude)))
        if self.run_id in exclude:
            return []
        self.owner, self.attempt = owner, self.attempt + 1
        return [Lease(self.run_id, owner, self.attempt)]

    async def renew(self, lease: Lease, lease_until: datetime) -> None:
        if (lease.owner, lease.attempt) != (self.owner, self.attempt):
            raise LostLease(lease.run_id)
        self.renewals += 1

    async def release(self, lease: Lease) -> None:
        pass

    async def load_work(self, run_id: str) -> Any:
        await asyncio.Event().wait()  # a generation that takes as long as the test


def executor(repository: OneRun, *, reclaim_own: bool = False) -> RunExecutor:
    return RunExecutor(
        repository,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]
        notifier=EventHub(None, "evolution-leases", 1000),
        owner="replica-a",
        reclaim_own=reclaim_own,
        settings=ExecutorSettings(lease_seconds=0.3, claim_interval_seconds=0.02),
    )


async def test_an_expired_lease_of_a_run_worked_on_here_is_renewed_not_claimed_again() -> None:
    repository = OneRun("run_1", "replica-a")
    worker = executor(repository)
    worker.submit(Lease("run_1", "replica-a", 1))
    worker.start()
    try:
        await asyncio.sleep(0.5)  # many claim passes, at least one renewal
        assert repository.attempt == 1  # never bumped: the live work was not fenced out
        assert repository.renewals >= 1
        assert len(repository.claims) > 5
        assert all(exclude == ("run_1",) for _, exclude in repository.claims)
        assert not worker._tasks["run_1"].done()
    finally:
        await worker.stop()


async def test_a_stable_worker_id_reclaims_its_own_leases_once_at_start() -> None:
    repository = OneRun("run_1", "replica-a")
    worker = executor(repository, reclaim_own=True)
    worker.start()
    try:
        await asyncio.sleep(0.2)
        assert repository.claims[0] == (True, ())
        assert all(not reclaim for reclaim, _ in repository.claims[1:])
        assert repository.attempt == 2  # taken back once, then worked on (and renewed) under that attempt
    finally:
        await worker.stop()
