"""The workflow service's event hub: execution events, plus cancel and work notices between replicas.

Events travel through the one mechanism every service uses (tdev_common.event_stream): committed events go
straight to local watchers, other replicas get a notice through Redis and read storage. On top, the
workflow service sends two control notices: "cancel execution X" (to whichever replica runs it) and
"work is waiting" (an unowned execution idle replicas may claim). See docs/workflow.md, "When Redis fails".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tdev_common.cache import DEFAULT_TIMEOUT_SECONDS
from tdev_common.event_stream import EventHub, Subscription
from workflow_svc.domain import Event

__all__ = ["EventBus", "Subscription"]

CANCEL = "c"
WORK = "w"


class EventBus(EventHub[Event]):
    """Execution events by execution id, and the cancel and work notices the engine listens to."""

    def __init__(self, redis_url: str | None, channel: str, max_buffer: int, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, heartbeat_seconds: float = 1.0,
                 max_queued_notices: int = 10_000) -> None:
        super().__init__(redis_url, channel, max_buffer, timeout_seconds=timeout_seconds,
                         heartbeat_seconds=heartbeat_seconds, max_queued_notices=max_queued_notices,
                         name="workflow-bus")
        self.on_cancel: Callable[[str, str], None] = lambda _execution_id, _reason: None
        self.on_work: Callable[[], None] = lambda: None
        self.on(CANCEL, self._cancel_notice)
        self.on(WORK, lambda _key, _message: self.on_work())

    async def published(self, execution_id: str, events: Sequence[Event]) -> None:
        """Called after ``events`` were committed: local watchers get them, other replicas a notice (queued).

        The last event of an execution is announced at once; others wait for the coalescing window.
        """
        if events:
            self.announce(execution_id, events, final=events[-1].type.ends_execution)

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Asks whichever replica runs the execution to cancel it."""
        self.on_cancel(execution_id, reason)
        self.notify(CANCEL, execution_id, {"r": reason})

    async def work_available(self) -> None:
        """Tells idle replicas that an unowned execution waits."""
        self.on_work()
        self.notify(WORK)

    def _cancel_notice(self, execution_id: str, message: dict[str, Any]) -> None:
        self.on_cancel(execution_id, str(message.get("r", "")))
