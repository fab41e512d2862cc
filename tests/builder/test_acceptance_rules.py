"""The acceptance comparison modes and the offline planner's choice between readings, as pure functions."""

from __future__ import annotations

import pytest

from tdev_common.llm.acceptance import key_name, mismatch
from tdev_common.llm.offline.planner import plan

pytestmark = pytest.mark.unit


def test_exact_rejects_extra_keys_and_accepts_integer_valued_doubles() -> None:
    assert mismatch({"n": 3}, {"n": 3.0}) is None
    assert mismatch({"n": 3}, {"n": 3, "m": 1}) == "outputs: unexpected keys ['m']"
    assert mismatch({"ok": True}, {"ok": 1}) == "ok: expected true, got 1"
    assert mismatch({"xs": [1, 2]}, {"xs": [2, 1]}) == "xs[0]: expected 1, got 2"


def test_json_subset_allows_extra_keys_at_every_depth_but_not_missing_ones() -> None:
    actual = {"stats": {"mean": 2, "max": 3}, "count": 2, "rows": [{"a": 1, "b": 2}]}
    assert mismatch({"stats": {"mean": 2}, "rows": [{"a": 1}]}, actual, "json_subset") is None
    assert mismatch({"stats": {"min": 1}}, actual, "json_subset") == "stats.min: missing (keys: ['max', 'mean'])"
    assert mismatch({"rows": []}, actual, "json_subset") is not None  # lists keep their length


def test_numeric_tolerance_is_absolute_and_defaults_to_a_millionth() -> None:
    assert mismatch({"mean": 1.667}, {"mean": 1.666667}, "numeric_tolerance", 0.001) is None
    assert mismatch({"mean": 1.667}, {"mean": 1.666667}, "numeric_tolerance", 0.0001) is not None
    assert mismatch({"mean": 1.0}, {"mean": 1.0000005}, "numeric_tolerance") is None
    assert mismatch({"mean": 1.0}, {"mean": 1.00001}, "numeric_tolerance") is not None


def test_key_names_equivalent_ignores_case_and_separators_at_every_depth() -> None:
    assert key_name("First-Name") == key_name("first_name") == key_name("firstName") == "firstname"
    assert mismatch({"userInfo": {"firstName": "A"}}, {"user_info": {"first_name": "A"}},
                    "key_names_equivalent") is None
    assert mismatch({"firstName": "A"}, {"first_name": "B"}, "key_names_equivalent") == \
        'firstName: expected "A", got "B"'
    with pytest.raises(ValueError, match="unknown comparison"):
        mismatch({}, {}, "fuzzy")


@pytest.mark.parametrize(("expected", "reading"), [
    ({"text": "dlrow olleh"}, "characters"), ({"text": "world hello"}, "words"),
    ({"text": "olleh dlrow"}, "each_word")])
def test_planner_picks_the_reversal_the_case_shows(expected: dict[str, str], reading: str) -> None:
    planned = plan("Reverse the text.", [], [{"inputs": {"text": "hello world"}, "expected": expected}])
    (agent,) = planned["agents"]
    assert agent["implementation"]["params"]["unit"] == reading


def test_planner_takes_input_and_output_names_from_the_cases() -> None:
    planned = plan("Compute the mean of the numbers.", [],
                   [{"inputs": {"scores": [1, 2, 3, 6]}, "expected": {"avg": 3, "biggest": 6}}])
    assert planned["workflow_input_schema"]["required"] == ["scores"]
    assert planned["outputs"] == {"avg": "nodes.statistics.output.mean", "biggest": "nodes.statistics.output.max"}
    assert all(set(e["expected_output"]) == {"avg", "biggest"} for e in planned["examples"])


def test_planner_keeps_its_own_reading_when_no_reading_meets_the_cases() -> None:
    planned = plan("Sort the numbers.", [], [{"inputs": {"numbers": [2, 1]}, "expected": {"numbers": [7]}}])
    assert planned["interpretation"].startswith("no reading of the requirements met every acceptance case")
    assert [a["id"] for a in planned["agents"]] == ["sort_items"]


def test_group_by_totals_over_nested_fields_after_a_filter_and_a_computed_field() -> None:
    text = ("Keep the orders where status is paid, add a field total = price * quantity, then report the sum of "
            "total per customer.country.")
    planned = plan(text)
    assert [a["id"] for a in planned["agents"]] == ["filter_records", "compute_field", "aggregate_by_field"]
    orders = [{"status": "paid", "price": 2, "quantity": 3, "customer": {"country": "NO"}},
              {"status": "open", "price": 9, "quantity": 9, "customer": {"country": "NO"}},
              {"status": "paid", "price": 1.5, "quantity": 2, "customer": {"country": "PE"}}]
    with_cases = plan(text, [], [{"inputs": {"orders": orders}, "expected": {"by_country": {"NO": 6, "PE": 3}}}])
    assert with_cases["outputs"] == {"by_country": "nodes.aggregate_by_field.output.totals"}
    assert with_cases["workflow_input_schema"]["required"] == ["orders"]


def test_top_n_records_by_a_field_sorts_then_keeps_the_first_n() -> None:
    players = [{"name": "a", "score": 3}, {"name": "b", "score": 9}, {"name": "c", "score": 5}]
    planned = plan("List the top 2 players by score.", [],
                   [{"inputs": {"players": players}, "expected": {"players": [players[1], players[2]]}}])
    assert [(a["id"], a["implementation"]["params"]) for a in planned["agents"]] == [
        ("sort_records", {"field": "score", "descending": True}),
        ("take_items", {"key": "records", "count": 2, "end": "first"})]
    last = plan("Keep the first 2 numbers.", [], [{"inputs": {"numbers": [1, 2, 3]}, "expected": {"numbers": [2, 3]}}])
    assert last["agents"][0]["implementation"]["params"]["end"] == "last"  # the case says which end
