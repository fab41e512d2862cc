"""AIP-158 paging, one way for every service: page sizes, opaque tokens bound to their query, fetch size+1.

A token encodes where the next page starts (a keyset position such as ``[create_time, id]``) together with a
fingerprint of the request that produced it: every field but ``page_size`` and ``page_token``. A token
replayed with other filters or order is refused, instead of silently paging through a different result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from tdev_common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_NOT_PART_OF_THE_QUERY = ("page_size", "page_token")

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results; ``after`` is the position to continue from, None on the last page."""

    items: Sequence[T] = field(default_factory=tuple)
    after: Any = None


def page_size(requested: int, field_name: str = "page_size") -> int:
    """AIP-158: 0 means the default, more than the maximum is coerced down, negative is an error.

    Raises:
        InvalidArgument: a negative size.
    """
    if requested < 0:
        raise _invalid(field_name, f"must not be negative (got {requested})")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def take(rows: Sequence[T], size: int, position: Callable[[T], Any]) -> Page[T]:
    """The first ``size`` of ``rows`` (fetched as size+1) and, when there were more, the last one's position."""
    if len(rows) > size:
        items = list(rows[:size])
        return Page(items, position(items[-1]) if items else None)
    return Page(list(rows), None)


def _fingerprint(request: Message) -> str:
    query = type(request)()
    query.CopyFrom(request)
    for name in _NOT_PART_OF_THE_QUERY:
        if name in query.DESCRIPTOR.fields_by_name:
            query.ClearField(name)
    return hashlib.sha256(query.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_token(request: Message, after: Any) -> str:
    """The next page's token for ``request``: ``after`` (JSON) bound to the request's query; "" on the last page."""
    if after is None:
        return ""
    raw = json.dumps({"q": _fingerprint(request), "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(request: Message, valid: Callable[[Any], bool] = lambda _: True) -> Any:
    """The position ``request.page_token`` encodes, None for the first page.

    ``valid`` checks the decoded position's shape (a token is opaque to callers, not trusted).

    Raises:
        InvalidArgument: a malformed token, or one issued for a different query.
    """
    token: str = getattr(request, "page_token", "")
    if not token:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        fingerprint, after = decoded["q"], decoded["a"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _invalid("page_token", "is malformed; pass a next_page_token exactly as received") from None
    if fingerprint != _fingerprint(request):
        raise _invalid("page_token", "was issued for a different query; keep filters and order when paging")
    if not valid(after):
        raise _invalid("page_token", "is malformed; pass a next_page_token exactly as received")
    return after


def is_keyset(after: Any) -> bool:
    """True for a ``[number, string]`` position (create time, id), the keyset most lists use."""
    return (isinstance(after, list) and len(after) == 2 and isinstance(after[0], int | float)
            and isinstance(after[1], str))


def _invalid(field_name: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name}: {problem}", reason="INVALID_PAGE_TOKEN" if field_name == "page_token"
                           else "INVALID_PAGE_SIZE", violations=[FieldViolation(field_name, problem)])
