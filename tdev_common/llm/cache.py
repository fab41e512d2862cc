"""Response cache: identical deterministic requests answered from tdev_common.cache (Redis or in-process)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from tdev_common.cache import Cache
from tdev_common.llm.base import Message

log = structlog.get_logger(__name__)


def _digest(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Keys are sha256 of the canonical request; a failing cache backend is a miss, never an error."""

    def __init__(self, cache: Cache | None, *, namespace: str, ttl_seconds: float, enabled: bool = True) -> None:
        self._cache = cache
        self._namespace = namespace
        self._ttl = ttl_seconds
        self.enabled = enabled and cache is not None

    @property
    def backend(self) -> str:
        """Name of the backend (redis, in-process) or "none"."""
        return self._cache.name if self._cache is not None and self.enabled else "none"

    def completion_key(self, *, provider: str, model: str, messages: Sequence[Message],
                       schema: Mapping[str, Any] | None, temperature: float, max_tokens: int) -> str:
        """Key of a completion request."""
        return self._namespace + "c:" + _digest({
            "provider": provider, "model": model, "messages": [m.as_dict() for m in messages],
            "schema": schema, "temperature": temperature, "max_tokens": max_tokens,
        })

    def embedding_key(self, *, provider: str, model: str, text: str) -> str:
        """Key of one text's embedding."""
        return self._namespace + "e:" + _digest({"provider": provider, "model": model, "text": text})

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored document, or None (missing, unreadable, or backend down)."""
        if not self.enabled or self._cache is None:
            return None
        try:
            raw = await self._cache.get(key)
        except Exception as error:  # a cache outage must not fail LLM calls
            log.warning("llm_cache_unavailable", operation="get", error=type(error).__name__)
            return None
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    async def put(self, key: str, document: Mapping[str, Any]) -> None:
        """Stores a document; backend errors are logged and ignored."""
        if not self.enabled or self._cache is None:
            return
        try:
            await self._cache.set(key, json.dumps(document).encode("utf-8"), self._ttl)
        except Exception as error:  # a cache outage must not fail LLM calls
            log.warning("llm_cache_unavailable", operation="set", error=type(error).__name__)
