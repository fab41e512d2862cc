"""One time type: domain timestamps are aware UTC datetimes; durations and lease deadlines are float seconds.

Why a datetime: it carries its zone, compares and prints unambiguously, and maps one-to-one onto
``google.protobuf.Timestamp`` and SQL ``timestamptz``; a bare float says nothing about its epoch or unit.
Lease deadlines, backoffs and timeouts stay float seconds (``time.time()`` arithmetic) where they are only
compared and added, never shown.

Tables that store times as epoch-second doubles keep doing so (no migration): their repository converts with
:func:`from_epoch` / :func:`to_epoch` at the boundary. Microsecond precision is what a datetime holds, so
:func:`utc_now` truncates to it and a time written through :func:`to_epoch` reads back equal.
Every convert.py goes through :func:`to_timestamp` / :func:`from_timestamp`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (microsecond precision)."""
    return datetime.now(UTC)


def from_epoch(seconds: float) -> datetime:
    """Epoch seconds (as stored in a double column) -> aware UTC datetime, rounded to the microsecond."""
    return datetime.fromtimestamp(seconds, UTC)


def to_epoch(value: datetime) -> float:
    """Aware datetime -> epoch seconds for a double column.

    Raises:
        ValueError: a naive datetime (its zone would be guessed from the host).
    """
    return _aware(value).timestamp()


def optional_from_epoch(seconds: float | None) -> datetime | None:
    """:func:`from_epoch` that keeps None (an unset nullable column)."""
    return None if seconds is None else from_epoch(seconds)


def optional_to_epoch(value: datetime | None) -> float | None:
    """:func:`to_epoch` that keeps None."""
    return None if value is None else to_epoch(value)


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """Aware datetime -> protobuf Timestamp; None stays None (the field is left unset).

    Raises:
        ValueError: a naive datetime.
    """
    if value is None:
        return None
    # Integer arithmetic on the difference from the epoch: exact like FromDatetime, a few times faster
    # (FromDatetime goes through a time tuple); it runs for every event a stream sends.
    delta = _aware(value) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    """Protobuf Timestamp -> aware UTC datetime (sub-microsecond nanos are dropped)."""
    return stamp.ToDatetime(tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: domain timestamps are aware UTC datetimes")
    return value
