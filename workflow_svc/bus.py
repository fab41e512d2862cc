"""Live delivery of stored events to watchers, and cancel/work notices between replicas.

Within a replica, committed events go straight to the watchers' buffers. Between replicas, Redis
pub/sub carries small notices ("execution X has events up to N", "cancel X", "work is waiting"); a
watcher on another replica then reads the new events from storage. Buffers are bounded: a watcher
that falls behind is marked stale and catches up from storage, so the engine never waits for it
and it never loses an event.

Notices never hold up the engine: :meth:`EventBus.published` delivers locally and queues the notice; one
sender task publishes queued notices in a pipeline. The queue coalesces (one notice per execution, the
latest sequence; one work notice) and is bounded: while Redis is down it keeps the newest notices and
drops the oldest with a log line, and watchers on other replicas fall back to reading storage every
``watch_poll_seconds``. Every Redis call is bounded by ``TDEV_REDIS_TIMEOUT_SECONDS``, and a subscription
that stops answering its heartbeats is reconnected (docs/workflow.md, "When Redis fails").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from common.cache import DEFAULT_TIMEOUT_SECONDS, RedisBreaker, Subscriber, redis_client
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

    def __init__(self, redis_url: str | None, channel: str, max_buffer: int, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, heartbeat_seconds: float = 1.0,
                 max_queued_notices: int = 10_000) -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._channel = channel
        self._max_buffer = max_buffer
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._redis: Any = None
        self._redis_url = redis_url
        self._timeout = timeout_seconds
        self._heartbeat = heartbeat_seconds
        self._breaker: RedisBreaker | None = None
        self._subscriber: Subscriber | None = None
        self._sender: asyncio.Task[None] | None = None
        self.on_cancel: Callable[[str, str], None] = lambda _execution_id, _reason: None
        self.on_work: Callable[[], None] = lambda: None
        # Notices waiting for the sender, keyed so that a newer one replaces an older one of the same kind.
        self._queue: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._max_queued = max_queued_notices
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._dropped = 0

    async def start(self) -> None:
        """Connects to Redis and starts listening and sending (no-op without Redis)."""
        if not self._redis_url:
            return
        self._redis = redis_client(self._redis_url, self._timeout)
        self._breaker = RedisBreaker(self._redis, "workflow-bus")
        self._subscriber = Subscriber(self._redis, self._channel, "workflow-bus", self._dispatch,
                                      on_up=self._poke_all, on_down=self._subscription_lost,
                                      heartbeat_seconds=self._heartbeat, timeout_seconds=self._timeout)
        self._sender = asyncio.create_task(self._send_queued(), name="workflow-bus-sender")
        await self._subscriber.start(5.0)

    async def close(self) -> None:
        """Stops listening and sending, and disconnects.

        Notices still queued go out in one last pipeline, bounded by the Redis timeout (they announce the
        last events of executions this replica ran: watchers elsewhere need not wait for their storage poll).
        """
        if self._subscriber is not None:
            await self._subscriber.close()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._queue and self._breaker is not None and self._breaker.healthy:
            try:
                await self._breaker.call(functools.partial(self._publish, self._queue))
            except Exception as error:
                log.warning("bus_notices_dropped", reason="closing", notices=len(self._queue), error=str(error))
        if self._breaker is not None:
            await self._breaker.close()
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

    # -- publishing (never waits for Redis) -------------------------------------------------------------------
    async def published(self, execution_id: str, events: Sequence[Event]) -> None:
        """Called after ``events`` were committed: local watchers get them, other replicas a notice (queued)."""
        for subscription in self._subscriptions.get(execution_id, ()):
            subscription.push(events)
        if self._redis is None or not events:
            return
        last = events[-1]
        key = ("e", execution_id)
        queued = self._queue.get(key)
        if queued is None or queued["s"] < last.sequence:
            # The last event of an execution is announced at once; others wait for the coalescing window.
            self._enqueue(key, {"k": "e", "x": execution_id, "s": last.sequence}, urgent=last.type.ends_execution)

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Asks whichever replica runs the execution to cancel it."""
        self.on_cancel(execution_id, reason)
        self._enqueue(("c", execution_id), {"k": "c", "x": execution_id, "r": reason}, urgent=True)

    async def work_available(self) -> None:
        """Tells idle replicas that an unowned execution waits."""
        self.on_work()
        self._enqueue(("w", ""), {"k": "w"}, urgent=True)

    def _enqueue(self, key: tuple[str, str], message: dict[str, Any], *, urgent: bool) -> None:
        if self._redis is None:
            return
        self._queue.pop(key, None)
        self._queue[key] = message
        self._trim()
        self._queued.set()
        if urgent:
            self._urgent.set()

    async def _send_queued(self) -> None:
        assert self._breaker is not None
        delay = 0.05
        while True:
            await self._queued.wait()
            await self._breaker.wait_healthy()
            batch, self._queue = self._queue, OrderedDict()
            self._queued.clear()
            self._urgent.clear()
            if not batch:
                continue
            try:
                await self._breaker.call(functools.partial(self._publish, batch))
            except asyncio.CancelledError:
                self._requeue(batch)  # closing: close() sends what is left
                raise
            except Exception as error:  # watchers fall back to polling storage; never fail the engine
                log.warning("bus_publish_failed", error=str(error) or type(error).__name__, notices=len(batch))
                self._requeue(batch)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            if self._dropped:
                log.info("bus_notices_resumed", dropped=self._dropped)
                self._dropped = 0
            # Coalescing window: notices arriving meanwhile go out together, unless one is urgent.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), NOTICE_SECONDS)

    async def _publish(self, batch: OrderedDict[tuple[str, str], dict[str, Any]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for message in batch.values():
                message["o"] = self.origin
                pipe.publish(self._channel, json.dumps(message, separators=(",", ":")))
            await pipe.execute()

    def _requeue(self, batch: OrderedDict[tuple[str, str], dict[str, Any]]) -> None:
        # Notices queued since the batch was taken are newer and win; the batch goes back in front of them.
        newer, self._queue = self._queue, batch
        for key, message in newer.items():
            self._queue.pop(key, None)
            self._queue[key] = message
        self._trim()
        self._queued.set()

    def _trim(self) -> None:
        while len(self._queue) > self._max_queued:
            # Redis has been away a while: the oldest notices go (their watchers read storage anyway).
            self._queue.popitem(last=False)
            if self._dropped == 0:
                log.warning("bus_notices_dropped", reason="queue full while Redis is unavailable",
                            max_queued=self._max_queued)
            self._dropped += 1

    # -- listening ----------------------------------------------------------------------------------------
    def _poke_all(self) -> None:
        # (Re)subscribed: notices sent while this replica was not listening are lost, so every watcher here
        # reads storage once instead of waiting for its safety poll.
        for group in self._subscriptions.values():
            for subscription in group:
                subscription.poke()

    def _subscription_lost(self) -> None:
        if self._breaker is not None:  # a silent subscription means a hung Redis: stop sending meanwhile
            self._breaker.trip(TimeoutError("the bus subscription stopped answering"))

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
