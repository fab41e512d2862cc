"""The measurement cache over tdev_common.cache (Redis or in-process), with entries signed by HMAC.

Candidates run sandboxed without network, but the cache is a shared store: signing each entry (over its
key and value) with a key only the service holds means nothing but the service can create an entry that
it will trust, so a forged "fitness" is simply a miss.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

import structlog

from evolution_svc import codec
from evolution_svc.domain import Measurement
from tdev_common.cache import Cache

log = structlog.get_logger(__name__)
SIGNATURE_BYTES = 32


class SignedMeasurementCache:
    """MeasurementCache storing ``hmac || json`` under ``measurement:<key>``."""

    def __init__(self, cache: Cache, signing_key: bytes | None, ttl_seconds: float) -> None:
        self._cache = cache
        self._key = signing_key or secrets.token_bytes(32)
        self._ttl = ttl_seconds

    def _sign(self, key: str, body: bytes) -> bytes:
        return hmac.new(self._key, key.encode() + b"\0" + body, hashlib.sha256).digest()

    async def get(self, key: str) -> Measurement | None:
        """The measurement, or None when absent, unsigned, forged, corrupt or the cache is down."""
        try:
            raw = await self._cache.get(f"measurement:{key}")
        except Exception as error:  # a cache outage is a miss, never a failed evaluation
            log.warning("fitness_cache_unavailable", error=str(error))
            return None
        if raw is None or len(raw) <= SIGNATURE_BYTES:
            return None
        signature, body = raw[:SIGNATURE_BYTES], raw[SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, self._sign(key, body)):
            log.warning("fitness_cache_bad_signature", key=key[-16:])
            return None
        try:
            return codec.measurement_from_json(json.loads(body))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, key: str, measurement: Measurement) -> None:
        """Stores a signed measurement; a cache outage is logged and ignored."""
        body = json.dumps(codec.measurement_to_json(measurement), separators=(",", ":")).encode()
        try:
            await self._cache.set(f"measurement:{key}", self._sign(key, body) + body, self._ttl)
        except Exception as error:
            log.warning("fitness_cache_unavailable", error=str(error))
