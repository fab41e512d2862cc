"""GetAgent answers cached ready to send: an in-process LRU, shared through Redis when configured.

The hot path (:meth:`ResponseCache.get_now`) is one dict lookup with no await. Invalidation after a
change is immediate in this process; other replicas drop their copies when the Redis pub/sub message
arrives (milliseconds), and a per-agent generation counter in Redis keeps a reader that loaded before a
change from writing its stale answer to the shared cache afterwards.

Redis trouble degrades to the database, never to an error, a wait or a stale answer beyond a short bound
(docs/registry.md, "Cache consistency when Redis fails"):

- every Redis call is bounded by a socket timeout, and after one failure Redis is skipped until a probe
  answers (:class:`tdev_common.cache.RedisBreaker`), so GetAgent falls back to the database at once;
- an invalidation that could not be published is retried until it is; meanwhile this replica neither
  reads nor fills the shared tier for that agent, and no replica reads the shared tier for a second after
  Redis comes back (time for the retries to land);
- entries are kept for the full TTL only while this replica can trust what it hears: its subscription
  answers heartbeats and it has no unpublished invalidation. Otherwise they live ``degraded_ttl_seconds``.
  A subscription that stops answering is noticed within heartbeat + timeout and the local copies dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

from tdev_common.cache import DEFAULT_TIMEOUT_SECONDS, RedisBreaker, Subscriber, redis_client

log = structlog.get_logger(__name__)

M = TypeVar("M")
Key = tuple[str, str, str, bool]  # (agent_id, name, version, exclude_code) as requested
LATEST = "~"
# After Redis comes back, the shared tier may still hold answers whose invalidation another replica could not
# publish; that replica's probe (every 0.25 s) finds Redis back and republishes well within this time.
SHARED_TIER_GRACE_SECONDS = 1.0

# SET only while the agent's generation is still the one read before loading from the database.
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[1])
if (current or '0') == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class ResponseCache(Generic[M]):
    """Ready-to-send responses keyed by request; also the service's ChangeListener."""

    def __init__(self, *, parse: Callable[[bytes], M], serialize: Callable[[M], bytes],
                 redis_url: str | None = None, namespace: str = "tdev:registry:", max_entries: int = 10_000,
                 ttl_seconds: float = 300.0, degraded_ttl_seconds: float = 1.0,
                 redis_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, heartbeat_seconds: float = 0.5) -> None:
        self._parse = parse
        self._serialize = serialize
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._degraded_ttl = min(degraded_ttl_seconds, ttl_seconds)
        self._entries: OrderedDict[Key, tuple[M, str, float]] = OrderedDict()
        self._by_agent: dict[str, set[Key]] = defaultdict(set)
        self._names: dict[str, str] = {}
        self._epoch = 0
        self._changed_at: dict[str, int] = {}
        self._namespace = namespace
        self._channel = f"{namespace}invalidate"
        self._redis: Any = None
        self._breaker: RedisBreaker | None = None
        self._subscriber: Subscriber | None = None
        # Invalidations not yet published to Redis: agent_id -> (versions, first failure time).
        self._unpublished: dict[str, tuple[set[str], float]] = {}
        self._republisher: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        if redis_url:
            self._redis = redis_client(redis_url, redis_timeout_seconds)
            self._breaker = RedisBreaker(self._redis, "registry-cache")
            self._subscriber = Subscriber(
                self._redis, self._channel, "registry-cache-invalidations", self._on_invalidation,
                on_up=self._clear_local, on_down=self._subscription_lost,
                heartbeat_seconds=heartbeat_seconds, timeout_seconds=redis_timeout_seconds)
            self._set_if_generation = self._redis.register_script(_SET_IF_GENERATION)

    @property
    def backend(self) -> str:
        """``in-process`` or ``in-process+redis``."""
        return "in-process+redis" if self._redis is not None else "in-process"

    async def start(self) -> None:
        """Subscribes to invalidations from other replicas (Redis only); serves from the database meanwhile."""
        if self._subscriber is not None:
            await self._subscriber.start(5.0)

    async def close(self) -> None:
        """Stops listening and retrying, and closes the Redis connection."""
        if self._subscriber is not None:
            await self._subscriber.close()
        tasks = [*self._writes, *([self._republisher] if self._republisher is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._unpublished:
            log.warning("cache_invalidations_abandoned", agents=sorted(self._unpublished))
        if self._breaker is not None:
            await self._breaker.close()
        if self._redis is not None:
            await self._redis.aclose()
        self._entries.clear()

    # ---- reading ------------------------------------------------------------------------------------

    def get_now(self, key: Key) -> M | None:
        """The cached response, without awaiting anything; None on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        message, _agent_id, expires = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        return message

    async def get_or_load(self, key: Key, load: Callable[[], Awaitable[tuple[str, M]]]) -> M:
        """The cached response, else the shared cache's, else ``load()``'s (agent_id, response), cached."""
        cached = self.get_now(key)
        if cached is not None:
            return cached
        epoch = self._epoch
        agent_id = key[0] or self._names.get(key[1], "") or await self._shared_name(key[1])
        generation = b"0"
        shared = self._shared_usable(agent_id)
        if shared:
            found = await self._shared_get(agent_id, key)
            if found is None:
                shared = False  # Redis failed just now: do not write back either
            else:
                generation, data = found
                if data is not None:
                    message = self._parse(data)
                    self._put(key, agent_id, message, epoch)
                    return message
        loaded_id, message = await load()
        self._put(key, loaded_id, message, epoch)
        if self._redis is not None and self._shared_usable(loaded_id):
            # Off the response path: a slow Redis must not hold up the answer.
            self._spawn_write(self._shared_put(key, loaded_id, message, generation if shared else None))
        return message

    def _shared_usable(self, agent_id: str) -> bool:
        # The shared tier of an agent whose invalidation is still unpublished holds the old answer.
        return (bool(agent_id) and self._breaker is not None
                and self._breaker.healthy_for() >= SHARED_TIER_GRACE_SECONDS and agent_id not in self._unpublished)

    def _trusted(self) -> bool:
        """Whether a local entry may live its full TTL: every change anywhere will reach this process."""
        if self._subscriber is None:
            return True
        return self._subscriber.connected and not self._unpublished

    def _put(self, key: Key, agent_id: str, message: M, epoch: int) -> None:
        if key[1]:
            self._names[key[1]] = agent_id  # a name never moves to another agent
        if self._changed_at.get(agent_id, -1) > epoch:
            return  # changed while we loaded: the answer may be stale
        ttl = self._ttl if self._trusted() else self._degraded_ttl
        self._entries[key] = (message, agent_id, time.monotonic() + ttl)
        self._entries.move_to_end(key)
        self._by_agent[agent_id].add(key)
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._by_agent.get(entry[1])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_agent[entry[1]]

    # ---- invalidation -------------------------------------------------------------------------------

    def _forget_locally(self, agent_id: str) -> None:
        self._epoch += 1
        self._changed_at[agent_id] = self._epoch
        for key in list(self._by_agent.get(agent_id, ())):
            self._drop(key)

    async def agent_changed(self, agent_id: str, versions: Sequence[str]) -> None:
        """Drops every cached answer about the agent here, in Redis and on the other replicas.

        Never raises and waits at most one Redis timeout: when Redis cannot take the invalidation, it is
        retried in the background until it is published (see the module docstring for what holds meanwhile).
        """
        self._forget_locally(agent_id)
        if self._redis is None:
            return
        pending, since = self._unpublished.get(agent_id, (set(), time.monotonic()))
        self._unpublished[agent_id] = (pending | set(versions), since)
        if self._breaker is not None and self._breaker.healthy and await self._publish(agent_id):
            return
        if self._republisher is None or self._republisher.done():
            self._republisher = asyncio.create_task(self._republish(), name="registry-cache-republish")

    async def _publish(self, agent_id: str) -> bool:
        """Publishes the agent's pending invalidation; True once Redis took it."""
        assert self._breaker is not None
        entry = self._unpublished.get(agent_id)
        if entry is None:
            return True
        versions, since = entry
        keys = [self._response_key(agent_id, v, c) for v in (LATEST, *sorted(versions)) for c in (False, True)]

        async def invalidate() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._generation_key(agent_id))
                pipe.delete(*keys)
                pipe.publish(self._channel, agent_id)
                await pipe.execute()

        try:
            await self._breaker.call(invalidate)
        except Exception as error:  # retried by _republish; the database stays the truth
            log.warning("cache_invalidation_failed", agent_id=agent_id, error=str(error) or type(error).__name__,
                        retrying=True)
            return False
        # A change that came in while the pipeline ran stays pending for the next round.
        current = self._unpublished.get(agent_id)
        if current is not None and current[0] <= versions:
            del self._unpublished[agent_id]
        delay = time.monotonic() - since
        if delay > 0.5:
            log.info("cache_invalidation_published", agent_id=agent_id, delay_seconds=round(delay, 3))
        return True

    async def _republish(self) -> None:
        assert self._breaker is not None
        while self._unpublished:
            await self._breaker.wait_healthy()
            for agent_id in list(self._unpublished):
                if not await self._publish(agent_id):
                    break
            if self._unpublished:
                await asyncio.sleep(0.05)
        # Everything is published: entries may live their full TTL again.

    def _on_invalidation(self, data: bytes | str) -> None:
        self._forget_locally(data.decode() if isinstance(data, bytes) else str(data))

    def _subscription_lost(self) -> None:
        self._clear_local()
        if self._breaker is not None:  # a silent subscription means a hung Redis: stop asking it
            self._breaker.trip(TimeoutError("the invalidation subscription stopped answering"))

    def _clear_local(self) -> None:
        # On (re)subscribing and on losing the subscription: anything cached here may have missed an
        # invalidation published while nobody listened.
        self._epoch += 1
        for agent_id in list(self._by_agent):
            self._changed_at[agent_id] = self._epoch
        self._entries.clear()
        self._by_agent.clear()

    # ---- Redis --------------------------------------------------------------------------------------

    def _generation_key(self, agent_id: str) -> str:
        return f"{self._namespace}gen:{agent_id}"

    def _response_key(self, agent_id: str, version: str, exclude_code: bool) -> str:
        return f"{self._namespace}resp:{agent_id}:{version or LATEST}:{'n' if exclude_code else 'c'}"

    async def _shared_name(self, name: str) -> str:
        if not name or self._breaker is None or not self._breaker.healthy:
            return ""
        try:
            value = await self._breaker.call(lambda: self._redis.get(f"{self._namespace}name:{name}"))
        except Exception as error:
            log.warning("cache_read_failed", error=str(error) or type(error).__name__)
            return ""
        return value.decode() if value else ""

    async def _shared_get(self, agent_id: str, key: Key) -> tuple[bytes, bytes | None] | None:
        assert self._breaker is not None
        try:
            generation, data = await self._breaker.call(lambda: self._redis.mget(
                self._generation_key(agent_id), self._response_key(agent_id, key[2], key[3])))
        except Exception as error:
            log.warning("cache_read_failed", error=str(error) or type(error).__name__)
            return None
        return (generation or b"0"), data

    def _spawn_write(self, write: Awaitable[None]) -> None:
        if len(self._writes) >= 64:  # Redis is slow: filling the shared tier can wait for the next miss
            asyncio.ensure_future(write).cancel()
            return
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _shared_put(self, key: Key, agent_id: str, message: M, generation: bytes | None) -> None:
        assert self._breaker is not None
        try:
            if key[1]:
                await self._breaker.call(lambda: self._redis.set(f"{self._namespace}name:{key[1]}", agent_id))
            if generation is not None:
                await self._breaker.call(lambda: self._set_if_generation(
                    keys=[self._generation_key(agent_id), self._response_key(agent_id, key[2], key[3])],
                    args=[generation, self._serialize(message), int(self._ttl * 1000)]))
        except Exception as error:
            log.warning("cache_write_failed", error=str(error) or type(error).__name__)
