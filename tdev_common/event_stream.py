"""One event-stream mechanism for every service: stored events, then live ones, behind one notifier.

A service stores each event (with a per-stream sequence number) before it announces it. Watchers read what
is stored after their cursor, then wait on the :class:`EventHub`:

* within a replica, committed events go straight to the watchers' bounded buffers (no storage read);
* between replicas, Redis pub/sub carries small notices ("stream X has new events", plus any control
  notices a service defines); a watcher elsewhere then reads the new events from storage.

A watcher that falls behind, or hears of events it has no payload for, is marked stale and reads storage,
so the writer never waits for it and it never loses an event. Notices never hold up a writer:
:meth:`EventHub.published` delivers locally and queues the notice; one sender task publishes queued notices
in a pipeline. The queue coalesces (one notice per stream and kind) and is bounded: while Redis is down it
keeps the newest notices and drops the oldest with a log line, and watchers elsewhere fall back to reading
storage every ``poll_seconds``. Every Redis call is bounded by its timeout, and a subscription that stops
answering its heartbeats is reconnected (tdev_common.cache.Subscriber).

:func:`stored_then_live` is the one watch loop the services share: no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog

from tdev_common.cache import DEFAULT_TIMEOUT_SECONDS, RedisBreaker, Subscriber, redis_client

log = structlog.get_logger(__name__)
NOTICE_SECONDS = 0.02
EVENTS = "e"  # the notice kind every hub sends: new events stored for a stream


class Sequenced(Protocol):
    """What a stream's events share: a per-stream sequence number (1, 2, ...)."""

    @property
    def sequence(self) -> int: ...


E = TypeVar("E", bound=Sequenced)


class Subscription(Generic[E]):
    """One watcher's view of one stream's live events."""

    def __init__(self, key: str, max_buffer: int) -> None:
        self.key = key
        self.buffer: deque[E] = deque()
        self.wake = asyncio.Event()
        self.stale = False
        self._max = max_buffer

    @property
    def execution_id(self) -> str:
        """The stream's key (the workflow service's name for it)."""
        return self.key

    def push(self, events: Sequence[E]) -> None:
        """Buffers live events; past the bound, drops them and asks for a storage read instead."""
        if self.stale or len(self.buffer) + len(events) > self._max:
            self.buffer.clear()
            self.stale = True
        else:
            self.buffer.extend(events)
        self.wake.set()

    def poke(self) -> None:
        """New events exist in storage (another replica stored them, or no payload came with the news)."""
        self.stale = True
        self.wake.set()


Handler = Callable[[str, dict[str, Any]], None]


class EventHub(Generic[E]):
    """In-process fan-out of committed events, plus Redis notices between replicas when Redis is configured."""

    def __init__(self, redis_url: str | None, channel: str, max_buffer: int, *,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, heartbeat_seconds: float = 1.0,
                 max_queued_notices: int = 10_000, name: str = "event-hub") -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._name = name
        self._channel = channel
        self._max_buffer = max_buffer
        self._subscriptions: dict[str, set[Subscription[E]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._redis: Any = None
        self._redis_url = redis_url
        self._timeout = timeout_seconds
        self._heartbeat = heartbeat_seconds
        self._breaker: RedisBreaker | None = None
        self._subscriber: Subscriber | None = None
        self._sender: asyncio.Task[None] | None = None
        # Notices waiting for the sender, keyed so that a newer one replaces an older one of the same kind.
        self._queue: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._max_queued = max_queued_notices
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._dropped = 0

    def on(self, kind: str, handler: Handler) -> None:
        """Calls ``handler(key, message)`` for each control notice of ``kind`` from another replica."""
        if kind == EVENTS:
            raise ValueError(f"notice kind {EVENTS!r} is the hub's own")
        self._handlers[kind] = handler

    async def start(self) -> None:
        """Connects to Redis and starts listening and sending (no-op without Redis)."""
        if not self._redis_url:
            return
        self._redis = redis_client(self._redis_url, self._timeout)
        self._breaker = RedisBreaker(self._redis, self._name)
        self._subscriber = Subscriber(self._redis, self._channel, self._name, self._dispatch,
                                      on_up=self._poke_all, on_down=self._subscription_lost,
                                      heartbeat_seconds=self._heartbeat, timeout_seconds=self._timeout)
        self._sender = asyncio.create_task(self._send_queued(), name=f"{self._name}-sender")
        await self._subscriber.start(5.0)

    async def close(self) -> None:
        """Stops listening and sending, and disconnects.

        Notices still queued go out in one last pipeline, bounded by the Redis timeout (they announce the
        last events of streams this replica wrote: watchers elsewhere need not wait for their storage poll).
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
                log.warning("bus_notices_dropped", reason="closing", notices=len(self._queue), error=str(error),
                            hub=self._name)
        if self._breaker is not None:
            await self._breaker.close()
        if self._redis is not None:
            await self._redis.aclose()

    # -- watchers -------------------------------------------------------------------------------------------
    def subscribe(self, key: str) -> Subscription[E]:
        """A new subscription to one stream; call :meth:`unsubscribe` when done."""
        subscription: Subscription[E] = Subscription(key, self._max_buffer)
        self._subscriptions.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[E]) -> None:
        """Forgets a subscription."""
        group = self._subscriptions.get(subscription.key)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._subscriptions[subscription.key]

    # -- publishing (never waits for Redis) -------------------------------------------------------------------
    def announce(self, key: str, events: Sequence[E] = (), *, final: bool = False) -> None:
        """Called after ``events`` of stream ``key`` were committed: local watchers get them (or, without
        events, read storage), other replicas a notice (queued; ``final`` sends it at once)."""
        for subscription in self._subscriptions.get(key, ()):
            if events:
                subscription.push(events)
            else:
                subscription.poke()
        if self._redis is None:
            return
        sequence = events[-1].sequence if events else 0
        notice_key = (EVENTS, key)
        queued = self._queue.get(notice_key)
        if queued is None or queued["s"] < sequence or not events:
            self._enqueue(notice_key, {"k": EVENTS, "x": key, "s": sequence}, urgent=final)

    def notify(self, kind: str, key: str = "", fields: dict[str, Any] | None = None, *, urgent: bool = True) -> None:
        """Queues a control notice for the other replicas (their ``on(kind)`` handler gets it)."""
        self._enqueue((kind, key), {"k": kind, "x": key, **(fields or {})}, urgent=urgent)

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
            except Exception as error:  # watchers fall back to polling storage; never fail the writer
                log.warning("bus_publish_failed", error=str(error) or type(error).__name__, notices=len(batch),
                            hub=self._name)
                self._requeue(batch)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            if self._dropped:
                log.info("bus_notices_resumed", dropped=self._dropped, hub=self._name)
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
                            max_queued=self._max_queued, hub=self._name)
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
            self._breaker.trip(TimeoutError("the hub's subscription stopped answering"))

    def _dispatch(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("o") == self.origin:
            return
        kind, key = message.get("k"), str(message.get("x", ""))
        if kind == EVENTS:
            for subscription in self._subscriptions.get(key, ()):
                subscription.poke()
        elif isinstance(kind, str) and kind in self._handlers:
            self._handlers[kind](key, message)


async def stored_then_live(
    hub: EventHub[E],
    key: str,
    after: int,
    *,
    read_after: Callable[[int, int], Awaitable[Sequence[E]]],
    is_last: Callable[[E], bool],
    ended: Callable[[int], Awaitable[bool]],
    poll_seconds: float,
    page: int = 500,
    subscription: Subscription[E] | None = None,
    writer_is_local: Callable[[], bool] | None = None,
) -> AsyncIterator[E]:
    """Events of stream ``key`` after sequence ``after``: stored ones, then live ones, until ``is_last``.

    No gap and no duplicate: the subscription is taken before the storage read, live events that do not
    continue the sequence send the watcher back to storage, and a quiet stream is checked every
    ``poll_seconds`` (``ended(last)`` says whether it finished with nothing more to send: a writer on another
    replica may have died, or Redis may be down).

    A caller that subscribed (``hub.subscribe(key)``) before the stream could have its first event passes
    that ``subscription`` with ``after=0``: then nothing can be stored that the subscription missed, and
    the first storage read is skipped (it is still made on any gap, stale buffer or quiet spell). The
    subscription is released here either way.

    ``writer_is_local`` says whether the stream's writer runs in this process now. While it does, its
    committed events reach the subscription directly, so a quiet spell is only a quiet stream and is not
    checked against storage (with many slow executions watched, those checks were a large share of the
    service's queries). Once it stops (the run ended or moved to another replica), quiet spells are
    checked again.
    """
    async for batch in stored_then_live_batches(
        hub, key, after, read_after=read_after, is_last=is_last, ended=ended, poll_seconds=poll_seconds, page=page,
        subscription=subscription, writer_is_local=writer_is_local,
    ):
        for event in batch:
            yield event


async def stored_then_live_batches(
    hub: EventHub[E],
    key: str,
    after: int,
    *,
    read_after: Callable[[int, int], Awaitable[Sequence[E]]],
    is_last: Callable[[E], bool],
    ended: Callable[[int], Awaitable[bool]],
    poll_seconds: float,
    page: int = 500,
    subscription: Subscription[E] | None = None,
    writer_is_local: Callable[[], bool] | None = None,
) -> AsyncIterator[list[E]]:
    """:func:`stored_then_live`'s events in batches: each list holds every event ready at that moment (a
    storage page, or what the subscription had buffered), in order and never empty, so a caller can send
    them in one message."""
    from_storage = subscription is None or after != 0
    subscription = hub.subscribe(key) if subscription is None else subscription
    try:
        last = after
        while True:
            if from_storage:
                subscription.stale = False
                subscription.buffer.clear()
                stored = list(await read_after(last, page))
                for index, event in enumerate(stored):
                    if is_last(event):
                        yield stored[: index + 1]
                        return
                if stored:
                    yield stored
                    last = stored[-1].sequence
                if len(stored) == page:
                    continue
                if not stored and await ended(last):
                    return
                from_storage = False
            ready: list[E] = []
            while subscription.buffer and not subscription.stale:
                event = subscription.buffer.popleft()
                if event.sequence <= last:
                    continue
                if event.sequence != last + 1:
                    from_storage = True
                    break
                ready.append(event)
                last = event.sequence
                if is_last(event):
                    yield ready
                    return
            if ready:
                yield ready
                continue  # more may have come while the batch was being sent: look before waiting
            if from_storage or subscription.stale:
                from_storage = True
                continue
            subscription.wake.clear()
            try:
                await asyncio.wait_for(subscription.wake.wait(), timeout=poll_seconds)
            except TimeoutError:
                if writer_is_local is not None and writer_is_local():
                    continue
                from_storage = True
                if await ended(last):
                    return
    finally:
        hub.unsubscribe(subscription)
