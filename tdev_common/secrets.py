"""Secrets from the environment or AWS Secrets Manager (cached), as SecretStr; values are never logged.

Every value this module hands out is registered with :func:`tdev_common.redaction.register_secret`, so the
log pipeline replaces it with ``**********`` wherever it would appear.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field

import structlog
from pydantic import SecretStr

from tdev_common.redaction import register_secret

log = structlog.get_logger(__name__)


class SecretNotFoundError(LookupError):
    """Raised when a required secret is in neither the environment nor Secrets Manager."""


@dataclass
class SecretStore:
    """Reads secrets: environment variable first, then ``{prefix}{name}`` in Secrets Manager."""

    prefix: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    ttl_seconds: float = 300.0
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def get(self, name: str, *, env_var: str | None = None, key: str | None = None) -> SecretStr | None:
        """Returns the secret, or None when it exists nowhere.

        Args:
            name: path below the prefix, e.g. ``api-keys/openai``.
            env_var: environment variable that overrides Secrets Manager, e.g. ``OPENAI_API_KEY``.
            key: field to pick when the secret holds a JSON object, e.g. ``api_key``.
        """
        if env_var and os.environ.get(env_var):
            return _remember(os.environ[env_var])
        if not self.prefix:
            return None
        raw = await self._fetch(self.prefix + name)
        if raw is None:
            return None
        if key is not None:
            try:
                document = json.loads(raw)
            except ValueError:
                log.warning("secret_not_json", secret=name, key=key)
                return None
            value = document.get(key) if isinstance(document, dict) else None
            return _remember(str(value)) if value else None
        return _remember(raw)

    async def require(self, name: str, *, env_var: str | None = None, key: str | None = None) -> SecretStr:
        """Like :meth:`get` but raises SecretNotFoundError naming where it looked (never the value)."""
        value = await self.get(name, env_var=env_var, key=key)
        if value is None:
            where = [f"env {env_var}"] if env_var else []
            if self.prefix:
                where.append(f"Secrets Manager {self.prefix}{name}")
            raise SecretNotFoundError(f"secret {name!r} not found in {' or '.join(where) or 'any source'}")
        return value

    async def _fetch(self, secret_id: str) -> str | None:
        now = time.monotonic()
        cached = self._cache.get(secret_id)
        if cached and cached[0] > now:
            return cached[1]
        async with self._lock:
            cached = self._cache.get(secret_id)
            if cached and cached[0] > now:
                return cached[1]
            value = await asyncio.to_thread(self.fetch_blocking, secret_id)
            self._cache[secret_id] = (now + self.ttl_seconds, value)
            return value

    def fetch_blocking(self, secret_id: str) -> str | None:
        """Reads one secret synchronously (start-up code); None when it does not exist."""
        import boto3  # local: boto3 costs ~100 ms to import and most processes never need it
        from botocore.exceptions import ClientError

        client = boto3.client(
            "secretsmanager", region_name=self.region or "us-east-1", endpoint_url=self.endpoint_url
        )
        try:
            answer = client.get_secret_value(SecretId=secret_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        value = answer.get("SecretString")
        if value is not None:
            register_secret(value)
        return value


def _remember(value: str) -> SecretStr:
    register_secret(value)
    return SecretStr(value)
