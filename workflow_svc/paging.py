"""AIP-158 paging: page sizes and opaque keyset page tokens (create time, id)."""

from __future__ import annotations

import base64
import binascii
import json

from common.errors import invalid_field

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
Cursor = tuple[float, str]


def page_size(requested: int) -> int:
    """The effective page size.

    Raises:
        InvalidArgument: for a negative size.
    """
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_cursor(create_time: float, item_id: str) -> str:
    """An opaque page token."""
    return base64.urlsafe_b64encode(json.dumps([create_time, item_id]).encode()).decode()


def decode_cursor(token: str) -> Cursor | None:
    """The cursor of a page token (None for the first page).

    Raises:
        InvalidArgument: the token was not issued by this service.
    """
    if not token:
        return None
    try:
        create_time, item_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(create_time), str(item_id)
    except (ValueError, TypeError, binascii.Error) as error:
        raise invalid_field("page_token", "not issued by this service", reason="INVALID_PAGE_TOKEN") from error
