"""The one paging helper: page-size rules, tokens bound to their query, fetch size+1."""

from __future__ import annotations

import pytest
from tdev.registry.v1 import registry_service_pb2 as pb2

from tdev_common import paging
from tdev_common.errors import InvalidArgument

pytestmark = pytest.mark.unit  # no I/O


def test_page_size_zero_is_the_default_too_large_is_coerced_negative_is_refused() -> None:
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(7) == 7
    assert paging.page_size(10_000) == paging.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as caught:
        paging.page_size(-1)
    assert [v.field for v in caught.value.violations] == ["page_size"]


def test_a_token_round_trips_and_is_bound_to_its_query_but_not_its_page_size() -> None:
    first = pb2.ListAgentsRequest(name_contains="a", page_size=2)
    token = paging.encode_token(first, [0.5, "agent_x"])
    again = pb2.ListAgentsRequest(name_contains="a", page_size=9, page_token=token)
    assert paging.decode_token(again) == [0.5, "agent_x"]
    other = pb2.ListAgentsRequest(name_contains="b", page_token=token)
    with pytest.raises(InvalidArgument, match="issued for a different query") as caught:
        paging.decode_token(other)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize("token", ["not-a-token!", "e30", "eyJxIjoxfQ"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token: is malformed"):
        paging.decode_token(pb2.ListAgentsRequest(page_token=token))


def test_a_token_whose_position_has_the_wrong_shape_is_refused() -> None:
    request = pb2.ListAgentsRequest()
    token = paging.encode_token(request, "not a keyset")
    with pytest.raises(InvalidArgument, match="malformed"):
        paging.decode_token(pb2.ListAgentsRequest(page_token=token), paging.is_keyset)


def test_take_keeps_size_rows_and_the_last_position_only_when_there_are_more() -> None:
    assert paging.take([1, 2, 3], 2, lambda row: row * 10) == paging.Page([1, 2], 20)
    assert paging.take([1, 2], 2, lambda row: row * 10) == paging.Page([1, 2], None)
    assert paging.encode_token(pb2.ListAgentsRequest(), None) == ""
