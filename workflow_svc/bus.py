"""Live delivery of stored events to watchers, and cancel/work notices between replicas.

Within a replica, committed events go straight to the watchers' buffers. Between replicas, Redis
pub/sub carries small notices ("execution X has events up to N", "cancel X", "work is waiting"); a
watcher on another replica then reads the new events from storage. Buffers are bounded: a watcher
that falls behind is marked stale and catches up from storage, so the engine never waits for it
and it never loses an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from workflow_svc.domain import Event

log = structlog.get_logger(__name__)
NOTICE_SECONDS = 0.02


class Subscription:
    """One watcher's view of one execution's live events."""

    def __init__(self, execution_id: str, max_buffer: int) -> None:
        self.execution_id = execution_id
        self.buffer: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.stale = False
        self._max = max_buffer

    def push(self, events: Sequence[Event]) -> None:
        """Buffers live events; past the bound, drops them and asks for a storage read instead."""
        if self.stale or len(self.buffer) + len(events) > self._max:
            self.buffer.clear()
            self.stale = True
        else:
            self.buffer.extend(events)
        self.wake.set()

    def poke(self) -> None:
        """New events exist in storage (another replica stored them)."""
        self.stale = True
        self.wake.set()


class EventBus:
    """In-process fan-out, plus Redis pub/sub between replicas when a Redis URL is configured."""

    def __init__(self, redis_url: str | None, channel: str, max_buffer: int) -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._channel = channel
        self._max_buffer = max_buffer
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._redis_url = redis_url
        self.on_cancel: Callable[[str, str], None] = lambda _execution_id, _reason: None
        self.on_work: Callable[[], None] = lambda: None
        self._ready = asyncio.Event()
        self._pending: dict[str, int] = {}
        self._last_notice: dict[str, float] = {}
        self._notices: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Connects to Redis and starts listening (no-op without Redis)."""
        if not self._redis_url:
            return
        from redis.asyncio import Redis

        self._redis = Redis.from_url(self._redis_url)
        self._listener = asyncio.create_task(self._listen(), name="workflow-bus-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5.0)

    async def close(self) -> None:
        """Stops listening and disconnects."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()

    # -- watchers -------------------------------------------------------------------------------------------
    def subscribe(self, execution_id: str) -> Subscription:
        """A new subscription; call :meth:`unsubscribe` when done."""
        subscription = Subscription(execution_id, self._max_buffer)
        self._subscriptions.setdefault(execution_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forgets a subscription."""
        group = self._subscriptions.get(subscription.execution_id)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._subscriptions[subscription.execution_id]

    # -- publishing -----------------------------------------------------------------------------------------
    async def published(self, execution_id: str, events: Sequence[Event]) -> None:
        """Called after ``events`` were committed: local watchers get them, other replicas a notice."""
        for subscription in self._subscriptions.get(execution_id, ()):
            subscription.push(events)
        if self._redis is None or not events:
            return
        # Notices are coalesced to one per execution per NOTICE_SECONDS (watchers read the events from
        # storage anyway); the last event of an execution is announced at once.
        now = time.monotonic()
        last = events[-1]
        if last.type.ends_execution:
            self._pending.pop(execution_id, None)
            self._last_notice.pop(execution_id, None)
            await self._send({"k": "e", "x": execution_id, "s": last.sequence})
            return
        if execution_id in self._pending:
            self._pending[execution_id] = last.sequence
            return
        since = now - self._last_notice.get(execution_id, 0.0)
        if since >= NOTICE_SECONDS:
            self._last_notice[execution_id] = now
            await self._send({"k": "e", "x": execution_id, "s": last.sequence})
        else:
            self._pending[execution_id] = last.sequence
            asyncio.get_running_loop().call_later(NOTICE_SECONDS - since, self._trailing_notice, execution_id)

    def _trailing_notice(self, execution_id: str) -> None:
        sequence = self._pending.pop(execution_id, None)
        if sequence is None:
            return
        self._last_notice[execution_id] = time.monotonic()
        task = asyncio.ensure_future(self._send({"k": "e", "x": execution_id, "s": sequence}))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Asks whichever replica runs the execution to cancel it."""
        self.on_cancel(execution_id, reason)
        await self._send({"k": "c", "x": execution_id, "r": reason})

    async def work_available(self) -> None:
        """Tells idle replicas that an unowned execution waits."""
        self.on_work()
        await self._send({"k": "w"})

    async def _send(self, message: dict[str, Any]) -> None:
        if self._redis is None:
            return
        message["o"] = self.origin
        try:
            await self._redis.publish(self._channel, json.dumps(message, separators=(",", ":")))
        except Exception as error:  # watchers fall back to polling storage; never fail the engine
            log.warning("bus_publish_failed", error=str(error))

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self._channel)
                self._ready.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("bus_listen_failed", error=str(error), retry_seconds=backoff)
                self._ready.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("o") == self.origin:
            return
        kind = message.get("k")
        if kind == "e":
            for subscription in self._subscriptions.get(str(message.get("x")), ()):
                subscription.poke()
        elif kind == "c":
            self.on_cancel(str(message.get("x")), str(message.get("r", "")))
        elif kind == "w":
            self.on_work()
