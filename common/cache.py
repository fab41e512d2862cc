"""A small async byte cache: Redis when configured, an in-process LRU with TTLs otherwise."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


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

    def __init__(self, url: str, namespace: str = "") -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url)
        self._namespace = namespace

    @property
    def client(self) -> object:
        """The underlying redis.asyncio client (for pub/sub users)."""
        return self._redis

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._namespace + key)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        if ttl_seconds:
            await self._redis.set(self._namespace + key, value, px=int(ttl_seconds * 1000))
        else:
            await self._redis.set(self._namespace + key, value)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*(self._namespace + key for key in keys))

    async def close(self) -> None:
        await self._redis.aclose()


def build_cache(redis_url: str | None, namespace: str, max_entries: int = 10_000) -> Cache:
    """Redis when a URL is configured, the in-process LRU otherwise."""
    if redis_url:
        log.info("cache_backend", backend="redis", namespace=namespace)
        return RedisCache(redis_url, namespace)
    log.info("cache_backend", backend="in-process", namespace=namespace)
    return LocalCache(max_entries=max_entries, namespace=namespace)
