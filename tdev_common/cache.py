"""A small async byte cache (Redis when configured, an in-process LRU with TTLs otherwise), and the Redis
plumbing every service shares: clients that time out, a breaker that fails fast while Redis is down, and a
pub/sub subscriber that notices a hung server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")
DEFAULT_TIMEOUT_SECONDS = 0.5  # CommonSettings.redis_timeout_seconds


class RedisUnavailable(ConnectionError):
    """Redis is known to be unreachable right now; the call was not attempted."""


def redis_client(url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Any:
    """A ``redis.asyncio`` client whose every connect, read and write gives up after ``timeout_seconds``.

    Without socket timeouts a paused (SIGSTOPped, partitioned) Redis holds a caller forever, since the TCP
    connection stays open. redis-py's own retries are off: each caller knows better what a failure means
    (a cache miss, a notice to queue), and retrying inside the call only multiplies the wait.
    """
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                          retry=Retry(NoBackoff(), 0))


class RedisBreaker:
    """Fails Redis calls at once while Redis is known to be down, so a hung Redis costs one timeout, not one per call.

    The first failure (an error or a timeout) opens the breaker; from then on :meth:`call` raises
    :class:`RedisUnavailable` without touching the network, and a background probe PINGs every
    ``probe_seconds`` until Redis answers, which closes it again.
    """

    def __init__(self, client: Any, name: str, probe_seconds: float = 0.25) -> None:
        self._client = client
        self.name = name
        self._probe_seconds = probe_seconds
        self._up = asyncio.Event()
        self._up.set()
        self._down_since = 0.0
        self._up_since = -float("inf")
        self._probe: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """False from a failure until the next successful probe."""
        return self._up.is_set()

    def healthy_for(self) -> float:
        """Seconds since Redis last came back (infinite when it never failed); 0 while it is down."""
        return time.monotonic() - self._up_since if self._up.is_set() else 0.0

    async def wait_healthy(self) -> None:
        """Returns once Redis answers again (at once when it does already)."""
        await self._up.wait()

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``await operation()``, unless Redis is down.

        Raises:
            RedisUnavailable: the breaker is open; nothing was sent.
            Exception: whatever the operation raised (the breaker opens).
        """
        if not self._up.is_set():
            raise RedisUnavailable(f"{self.name}: Redis is unavailable")
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.trip(error)
            raise

    def trip(self, error: BaseException) -> None:
        """Opens the breaker (a caller saw Redis fail) and starts probing."""
        if not self._up.is_set():
            return
        self._up.clear()
        self._down_since = time.monotonic()
        log.warning("redis_unavailable", client=self.name, error=str(error) or type(error).__name__)
        self._probe = asyncio.create_task(self._run_probe(), name=f"{self.name}-redis-probe")

    async def _run_probe(self) -> None:
        while True:
            await asyncio.sleep(self._probe_seconds)
            try:
                await self._client.ping()
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            self._up_since = time.monotonic()
            self._up.set()
            log.info("redis_available", client=self.name, down_seconds=round(time.monotonic() - self._down_since, 3))
            return

    async def close(self) -> None:
        """Stops probing."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


class Subscriber:
    """Keeps one pub/sub subscription alive and knows when it can be trusted (``connected``).

    A paused Redis keeps the TCP connection open and silent, so a bare ``listen()`` would wait forever, deaf to
    everything published after Redis comes back elsewhere. Here the subscriber PINGs over the subscribed
    connection every ``heartbeat_seconds`` and treats a pong later than ``timeout_seconds`` as a dead connection:
    it reports ``on_down``, reconnects with backoff and reports ``on_up`` once subscribed again. Redis answers a
    PING only after delivering every message published before it, so while pongs come on time nothing sent to
    the channel has been missed for longer than ``heartbeat_seconds + timeout_seconds``.
    """

    def __init__(self, client: Any, channel: str, name: str, on_message: Callable[[bytes | str], None], *,
                 on_up: Callable[[], None] = lambda: None, on_down: Callable[[], None] = lambda: None,
                 heartbeat_seconds: float = 0.5, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._client = client
        self._channel = channel
        self._name = name
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._heartbeat = heartbeat_seconds
        self._timeout = timeout_seconds
        self.connected = False
        self._tried = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self, wait_seconds: float = 5.0) -> None:
        """Starts listening; waits (boundedly) for the first subscription or the first failure."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._name}-subscriber")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), wait_seconds)

    async def close(self) -> None:
        """Stops listening."""
        if self._task is not None:
            self._closing = True  # stopping on purpose is not Redis going down: no on_down
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("pubsub_reconnecting", subscriber=self._name, error=str(error) or type(error).__name__,
                            retry_seconds=delay)
            finally:
                was_connected, self.connected = self.connected, False
                if was_connected and not self._closing:
                    self._on_down()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            self._tried.set()
            # A connection that worked is retried at once; a Redis that refuses is retried at most every second.
            delay = 0.1 if was_connected else min(delay * 2, 1.0)
            await asyncio.sleep(delay)

    async def _pump(self, pubsub: Any) -> None:
        subscribed_by = time.monotonic() + self._timeout
        ping_sent: float | None = None
        next_ping = time.monotonic() + self._heartbeat
        while True:
            message = await pubsub.get_message(timeout=min(self._heartbeat, self._timeout))
            now = time.monotonic()
            if message is not None:
                kind = message.get("type")
                if kind == "message":
                    self._on_message(message["data"])
                elif kind == "pong":
                    ping_sent = None
                elif kind == "subscribe" and not self.connected:
                    self.connected = True
                    self._tried.set()
                    self._on_up()
            if not self.connected and now > subscribed_by:
                raise TimeoutError("no answer to SUBSCRIBE")
            if ping_sent is not None and now - ping_sent > self._timeout:
                raise TimeoutError(f"no pong within {self._timeout} s")
            if ping_sent is None and now >= next_ping and self.connected:
                await pubsub.ping()
                ping_sent, next_ping = now, now + self._heartbeat


class Cache(Protocol):
    """What services need of a cache; values are bytes, keys are namespaced by the cache."""

    name: str

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        """Stores a value, with an optional time to live."""

    async def delete(self, *keys: str) -> None:
        """Removes keys; missing ones are ignored."""

    async def close(self) -> None:
        """Releases connections."""


class LocalCache:
    """In-process LRU with per-entry expiry; one process only, so fine for the embedded mode."""

    name = "in-process"

    def __init__(self, max_entries: int = 10_000, namespace: str = "") -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._namespace = namespace

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        """Synchronous get: the hot path of a cache hit needs no await."""
        full = self._namespace + key
        entry = self._entries.get(full)
        if entry is None:
            return None
        expires, value = entry
        if expires and expires < time.monotonic():
            del self._entries[full]
            return None
        self._entries.move_to_end(full)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        full = self._namespace + key
        expires = time.monotonic() + ttl_seconds if ttl_seconds else 0.0
        self._entries[full] = (expires, value)
        self._entries.move_to_end(full)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(self._namespace + key, None)

    async def close(self) -> None:
        self._entries.clear()


class RedisCache:
    """Redis-backed cache shared by replicas."""

    name = "redis"

    def __init__(self, url: str, namespace: str = "", timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._redis = redis_client(url, timeout_seconds)
        self._breaker = RedisBreaker(self._redis, f"cache:{namespace}")
        self._namespace = namespace

    @property
    def client(self) -> object:
        """The underlying redis.asyncio client (for pub/sub users)."""
        return self._redis

    async def get(self, key: str) -> bytes | None:
        """The value; raises (RedisUnavailable at once while Redis is known down) when Redis fails."""
        value = await self._breaker.call(lambda: self._redis.get(self._namespace + key))
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        px = int(ttl_seconds * 1000) if ttl_seconds else None
        await self._breaker.call(lambda: self._redis.set(self._namespace + key, value, px=px))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._breaker.call(lambda: self._redis.delete(*(self._namespace + key for key in keys)))

    async def close(self) -> None:
        await self._breaker.close()
        await self._redis.aclose()


def build_cache(redis_url: str | None, namespace: str, max_entries: int = 10_000,
                timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Cache:
    """Redis when a URL is configured (every call bounded by ``timeout_seconds``), the in-process LRU otherwise."""
    if redis_url:
        log.info("cache_backend", backend="redis", namespace=namespace)
        return RedisCache(redis_url, namespace, timeout_seconds)
    log.info("cache_backend", backend="in-process", namespace=namespace)
    return LocalCache(max_entries=max_entries, namespace=namespace)
