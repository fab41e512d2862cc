"""In-process wake-ups for watchers: a writer publishes after storing an event, watchers wait on a ticket.

A ticket is taken before reading, so an event stored between the read and the wait is never missed;
watchers on other replicas fall back to polling (their writer publishes in another process).
"""

from __future__ import annotations

import asyncio


class Notifier:
    """One asyncio.Event per run, replaced at each publish."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def ticket(self, run_id: str) -> asyncio.Event:
        """Set at the next publish for ``run_id``."""
        return self._events.setdefault(run_id, asyncio.Event())

    def publish(self, run_id: str) -> None:
        """Wakes everyone holding a ticket for ``run_id``."""
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()
