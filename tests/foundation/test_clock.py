"""tdev_common.clock: aware UTC datetimes in the domain, epoch doubles in old columns, Timestamps on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tdev_common import clock

pytestmark = pytest.mark.unit


def test_utc_now_is_aware_utc() -> None:
    assert clock.utc_now().tzinfo is UTC


def test_a_microsecond_time_round_trips_through_an_epoch_double_exactly() -> None:
    start = datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)
    for step in range(2000):
        value = start + timedelta(microseconds=step * 7919)
        assert clock.from_epoch(clock.to_epoch(value)) == value


def test_epoch_doubles_keep_their_order_after_conversion() -> None:
    assert clock.from_epoch(1_700_000_000.25) == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert clock.optional_from_epoch(None) is None and clock.optional_to_epoch(None) is None


def test_timestamps_round_trip_and_other_zones_become_utc() -> None:
    value = datetime(2026, 3, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    stamp = clock.to_timestamp(value)
    assert stamp is not None and (stamp.seconds, stamp.nanos) == (1772366400, 5000)
    back = clock.from_timestamp(stamp)
    assert back == value and back.tzinfo is UTC
    assert clock.to_timestamp(None) is None


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        clock.to_epoch(datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="naive"):
        clock.to_timestamp(datetime(2026, 3, 1))
