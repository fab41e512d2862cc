"""Helpers shared by the SDK-backed providers: Retry-After, safe error text, status classification."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tdev_common.llm.errors import PermanentProviderError, ProviderCallError, TransientProviderError
from tdev_common.redaction import redact

_MAX_MESSAGE_CHARS = 200
# Servers echo keys in 401 bodies (sometimes whole); mask anything key-shaped, registered or not.
_KEY_SHAPED = re.compile(r"\b(sk|pk|key|ant|api)[-_][A-Za-z0-9_\-]{6,}", re.IGNORECASE)


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else None."""
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def safe_text(text: str) -> str:
    """Server text fit for logs and error messages: registered secrets and key-shaped strings masked."""
    cleaned = _KEY_SHAPED.sub("***", redact(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= _MAX_MESSAGE_CHARS else cleaned[:_MAX_MESSAGE_CHARS] + "..."


def server_message(body: Any) -> str:
    """The human message inside an error body, e.g. ``{"error": {"message": ...}}``."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return ""


def status_error(provider: str, status: int, headers: Mapping[str, str] | None, body: Any) -> ProviderCallError:
    """Transient for 429 and 5xx (with Retry-After), permanent for any other status."""
    detail = safe_text(server_message(body))
    message = f"{provider} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500:
        return TransientProviderError(provider, message, status=status, retry_after=retry_after_seconds(headers))
    return PermanentProviderError(provider, message, status=status)


def safe_url(url: str | None) -> str | None:
    """A URL fit for logs: user and password removed."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
