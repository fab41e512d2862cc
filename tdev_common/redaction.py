"""Known secret values, and a log processor that replaces them wherever they appear."""

from __future__ import annotations

import re
from typing import Any

MASK = "**********"
_MIN_SECRET_LENGTH = 6
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Remembers a secret value so that logs never show it (short values are ignored: too noisy)."""
    global _pattern
    if len(value) < _MIN_SECRET_LENGTH or value in _secrets:
        return
    _secrets.add(value)
    # Longest first so a secret containing another is masked whole.
    _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def redact(text: str) -> str:
    """Returns text with every registered secret replaced by the mask."""
    if _pattern is None:
        return text
    return _pattern.sub(MASK, text)


def redact_value(value: Any, keys: frozenset[str] = frozenset(), mask: str = MASK) -> Any:
    """``value`` with registered secrets masked in every string and, wherever a dict has one of ``keys``,
    that key's whole value replaced by ``mask``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: mask if key in keys else redact_value(item, keys, mask) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, keys, mask) for item in value)
    return value


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: masks registered secrets in every value of the event."""
    if _pattern is None:
        return event_dict
    return {key: redact_value(value) for key, value in event_dict.items()}
