"""stored_then_live: a quiet stream whose writer runs in this process is not checked against storage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tdev_common.event_stream import EventHub, stored_then_live, stored_then_live_batches

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]

POLL = 0.02


@dataclass(frozen=True)
class Ev:
    sequence: int
    last: bool = False


class Storage:
    """The stream's stored events, counting the reads a watcher makes."""

    def __init__(self) -> None:
        self.events: list[Ev] = []
        self.reads = 0
        self.ended_checks = 0

    async def read_after(self, last: int, limit: int) -> Sequence[Ev]:
        self.reads += 1
        return [e for e in self.events if e.sequence > last][:limit]

    async def ended(self, last: int) -> bool:
        self.ended_checks += 1
        return bool(self.events) and self.events[-1].last and last >= self.events[-1].sequence


async def _watch(hub: EventHub[Ev], storage: Storage, local: list[bool]) -> list[int]:
    subscription = hub.subscribe("s")
    seen = []
    async for event in stored_then_live(hub, "s", 0, read_after=storage.read_after, is_last=lambda e: e.last,
                                        ended=storage.ended, poll_seconds=POLL, subscription=subscription,
                                        writer_is_local=lambda: local[0]):
        seen.append(event.sequence)
    return seen


async def test_quiet_spells_of_a_local_writer_read_no_storage_and_a_remote_writer_is_polled() -> None:
    hub: EventHub[Ev] = EventHub(None, "test", 100)
    storage = Storage()
    local = [True]
    watcher = asyncio.create_task(_watch(hub, storage, local))
    await asyncio.sleep(POLL * 10)  # ten quiet spells while the writer is here
    assert (storage.reads, storage.ended_checks) == (0, 0)

    storage.events.append(Ev(1))
    hub.announce("s", [Ev(1)])
    await asyncio.sleep(POLL * 5)
    assert (storage.reads, storage.ended_checks) == (0, 0)

    # The run moved to another replica and its notices cannot arrive (no Redis): the poll finds its events.
    local[0] = False
    storage.events.extend([Ev(2), Ev(3, last=True)])
    assert await asyncio.wait_for(watcher, 5) == [1, 2, 3]
    assert storage.reads >= 1


async def test_events_announced_while_a_batch_is_being_sent_come_next_without_waiting_for_a_poll() -> None:
    hub: EventHub[Ev] = EventHub(None, "test", 100)
    storage = Storage()
    subscription = hub.subscribe("s")
    batches: list[list[int]] = []

    async def watch() -> None:
        async for batch in stored_then_live_batches(
                hub, "s", 0, read_after=storage.read_after, is_last=lambda e: e.last, ended=storage.ended,
                poll_seconds=60.0, subscription=subscription, writer_is_local=lambda: True):
            batches.append([e.sequence for e in batch])
            if len(batches) == 1:  # a slow send of the first batch, during which the rest is announced
                hub.announce("s", [Ev(3), Ev(4, last=True)])
                await asyncio.sleep(0.01)

    hub.announce("s", [Ev(1), Ev(2)])
    await asyncio.wait_for(watch(), 2.0)  # not the 60 s poll

    assert batches == [[1, 2], [3, 4]]
    assert storage.reads == 0
