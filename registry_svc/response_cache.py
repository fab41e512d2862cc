"""GetAgent answers cached ready to send: an in-process LRU, shared through Redis when configured.

The hot path (:meth:`ResponseCache.get_now`) is one dict lookup with no await. Invalidation after a
change is immediate in this process; other replicas drop their copies when the Redis pub/sub message
arrives (milliseconds), and a per-agent generation counter in Redis keeps a reader that loaded before a
change from writing its stale answer to the shared cache afterwards. A Redis outage degrades to the
database, never to an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

M = TypeVar("M")
Key = tuple[str, str, str, bool]  # (agent_id, name, version, exclude_code) as requested
LATEST = "~"

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
                 ttl_seconds: float = 300.0) -> None:
        self._parse = parse
        self._serialize = serialize
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._entries: OrderedDict[Key, tuple[M, str, float]] = OrderedDict()
        self._by_agent: dict[str, set[Key]] = defaultdict(set)
        self._names: dict[str, str] = {}
        self._epoch = 0
        self._changed_at: dict[str, int] = {}
        self._namespace = namespace
        self._channel = f"{namespace}invalidate"
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        if redis_url:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._set_if_generation = self._redis.register_script(_SET_IF_GENERATION)

    @property
    def backend(self) -> str:
        """``in-process`` or ``in-process+redis``."""
        return "in-process+redis" if self._redis is not None else "in-process"

    async def start(self) -> None:
        """Subscribes to invalidations from other replicas (Redis only)."""
        if self._redis is not None and self._listener is None:
            ready = asyncio.Event()
            self._listener = asyncio.create_task(self._listen(ready), name="registry-cache-invalidations")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 5.0)

    async def close(self) -> None:
        """Stops listening and closes the Redis connection."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
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
        if agent_id and self._redis is not None:
            shared = await self._shared_get(agent_id, key)
            if shared is not None:
                generation, data = shared
                if data is not None:
                    message = self._parse(data)
                    self._put(key, agent_id, message, epoch)
                    return message
        loaded_id, message = await load()
        self._put(key, loaded_id, message, epoch)
        if self._redis is not None:
            await self._shared_put(key, loaded_id, message, generation if agent_id else None)
        return message

    def _put(self, key: Key, agent_id: str, message: M, epoch: int) -> None:
        if key[1]:
            self._names[key[1]] = agent_id  # a name never moves to another agent
        if self._changed_at.get(agent_id, -1) > epoch:
            return  # changed while we loaded: the answer may be stale
        self._entries[key] = (message, agent_id, time.monotonic() + self._ttl)
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
        """Drops every cached answer about the agent here, in Redis and on the other replicas."""
        self._forget_locally(agent_id)
        if self._redis is None:
            return
        keys = [self._response_key(agent_id, v, c) for v in (LATEST, *versions) for c in (False, True)]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._generation_key(agent_id))
                pipe.delete(*keys)
                pipe.publish(self._channel, agent_id)
                await pipe.execute()
        except Exception as error:  # entries expire on their own; the database stays the truth
            log.warning("cache_invalidation_failed", agent_id=agent_id, error=str(error))

    async def _listen(self, ready: asyncio.Event) -> None:
        delay = 0.1
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    # Anything cached while we were not listening may have missed an invalidation.
                    self._clear_local()
                    ready.set()
                    delay = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self._forget_locally(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("cache_listener_reconnecting", error=str(error))
                ready.set()  # serve from the database meanwhile rather than hold up start-up
                self._clear_local()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _clear_local(self) -> None:
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
        if not name or self._redis is None:
            return ""
        try:
            value = await self._redis.get(f"{self._namespace}name:{name}")
        except Exception as error:
            log.warning("cache_read_failed", error=str(error))
            return ""
        return value.decode() if value else ""

    async def _shared_get(self, agent_id: str, key: Key) -> tuple[bytes, bytes | None] | None:
        try:
            generation, data = await self._redis.mget(
                self._generation_key(agent_id), self._response_key(agent_id, key[2], key[3]))
        except Exception as error:
            log.warning("cache_read_failed", error=str(error))
            return None
        return (generation or b"0"), data

    async def _shared_put(self, key: Key, agent_id: str, message: M, generation: bytes | None) -> None:
        try:
            if key[1]:
                await self._redis.set(f"{self._namespace}name:{key[1]}", agent_id)
            if generation is not None:
                await self._set_if_generation(
                    keys=[self._generation_key(agent_id), self._response_key(agent_id, key[2], key[3])],
                    args=[generation, self._serialize(message), int(self._ttl * 1000)])
        except Exception as error:
            log.warning("cache_write_failed", error=str(error))
