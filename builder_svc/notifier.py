"""Wakes watchers of a build when an event of it is stored in this process (others poll the event table)."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class EventNotifier:
    """Per-build wake-ups; a watcher subscribes before reading the table, so no event slips between."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, build_id: str) -> asyncio.Event:
        """An event set at the next notification for the build."""
        waiter = asyncio.Event()
        self._waiters[build_id].add(waiter)
        return waiter

    def unsubscribe(self, build_id: str, waiter: asyncio.Event) -> None:
        """Forgets a waiter."""
        waiters = self._waiters.get(build_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[build_id]

    def notify(self, build_id: str) -> None:
        """Wakes every waiter of the build."""
        for waiter in self._waiters.get(build_id, ()):
            waiter.set()
