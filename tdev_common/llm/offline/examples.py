"""Programming by example for the offline planner: alternative readings of a requirement, checked on the caller's
acceptance cases, and the wiring (input names, output names) the cases imply.

A requirement often reads more than one way ("reverse the words": the word order, or each word's letters; "keep
the first 5": characters or words; numbers in CSV cells converted or kept as text; "above 10": exclusive or
inclusive). The rules pick one reading; with acceptance cases the planner also tries the others, fewest changes
first, runs each pipeline's reference implementations on every case (pure Python, our own template code), and
keeps the first reading that reproduces them all. Input and output names come from the cases too: a case with
``{"values": [...]}`` feeds the pipeline's ``numbers``; an expected ``{"average": ...}`` is mapped to whichever
value the pipeline computes that equals it in every case (the mean, say).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tdev_common.llm import acceptance
from tdev_common.llm.offline.rules import Step
from tdev_common.llm.offline.templates import MEASURES, TEMPLATES

JSON = dict[str, Any]
MAX_READINGS = 256
Alternatives = Callable[[JSON], list[JSON]]


def _flip(name: str) -> Alternatives:
    return lambda p: [{**p, name: not p[name]}]


def _choices(name: str, values: Sequence[Any]) -> Alternatives:
    return lambda p: [{**p, name: v} for v in values if v != p[name]]


def _inclusive(p: JSON) -> list[JSON]:
    swap = {"gt": "ge", "ge": "gt", "lt": "le", "le": "lt"}
    return [{**p, "condition": swap[p["condition"]]}] if p.get("condition") in swap else []


def _precision(name: str) -> Alternatives:
    return lambda p: [{**p, name: v} for v in (2, 1, 0, 3, 6) if v != p[name]]


def _statistics(p: JSON) -> list[JSON]:
    # Every measure, so the cases' output names can pick the ones they want ("total" may be the sum).
    every = [{**p, "measures": list(MEASURES)}] if list(p["measures"]) != list(MEASURES) else []
    rounded = [{**p, "precision": v} for v in (2, 1, 0, 3) if v != p["precision"]]
    return [*every, {**p, "sample": not p["sample"]}, *rounded]


# What else a detected step could have meant, per template (the rules' reading stays the first).
ALTERNATIVES: dict[str, Alternatives] = {
    "reverse_text": _choices("unit", ("characters", "words", "each_word")),
    "truncate_text": _choices("unit", ("characters", "words")),
    "tokenize_words": _flip("lowercase"),
    "parse_csv": _flip("convert_numbers"),
    "sort_items": _flip("descending"),
    "sort_records": _flip("descending"),
    "filter_numbers": _inclusive,
    "filter_records": _inclusive,
    "statistics": _statistics,
    "replace_text": _flip("ignore_case"),
    "count_characters": _choices("mode", ("all", "non_whitespace", "letters")),
    "convert_temperature": _precision("precision"),
    "transform_numbers": _precision("precision"),
    "aggregate_by_field": _precision("precision"),
    "round_numbers": _choices("digits", (0, 1, 2, 3)),
    "take_items": lambda p: [*_choices("end", ("first", "last"))(p),
                             *_choices("key", ("numbers", "words", "records"))(p)],
    "word_frequency": _choices("top_n", range(1, 11)),
    # One record or a list of them: "each employee record" reads either way.
    "select_fields": _choices("key", ("record", "records")),
    "drop_fields": _choices("key", ("record", "records")),
    "rename_fields": _choices("key", ("record", "records")),
    "flatten_record": _choices("key", ("record", "records")),
    "character_frequency": _choices("top_n", range(1, 11)),
    "change_case": _choices("mode", ("lower", "upper", "title")),
}


def readings(steps: Sequence[Step]) -> Iterator[list[Step]]:
    """The rules' reading first, then every combination of alternatives, fewest changed steps first."""
    options: list[list[Step]] = []
    for step in steps:
        params = TEMPLATES[step.template].params(step.params)
        others = ALTERNATIVES.get(step.template, lambda _p: [])(params)
        options.append([step, *(replace(step, params=other) for other in others)])
    changeable = [index for index, choices in enumerate(options) if len(choices) > 1]
    produced = 0
    for changes in range(len(changeable) + 1):
        for chosen in itertools.combinations(changeable, changes):
            pools = [options[i][1:] if i in chosen else [options[i][0]] for i in range(len(options))]
            for combination in itertools.product(*pools):
                yield list(combination)
                produced += 1
                if produced >= MAX_READINGS:
                    return


def kind_of_value(value: Any) -> str:
    """What a JSON value is to the planner: text, record, records, words, numbers, list or scalar."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "record"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "records"
        if value and all(isinstance(v, str) for v in value):
            return "words"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return "numbers"
        return "list"
    return "scalar"


_ACCEPTS = {"text": {"text"}, "record": {"record"}, "records": {"records"}, "words": {"words"},
            "numbers": {"numbers", "values"}, "values": {"numbers", "words", "records", "list"}}


def input_names(input_keys: Sequence[str], cases: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The case input key feeding each pipeline input (same name, else the same name once normalised, else
    the one case key holding that kind of value), or None when the cases cannot feed the pipeline."""
    given: dict[str, Any] = {}
    for case in cases:
        for key, value in (case.get("inputs") or {}).items():
            given.setdefault(key, value)
    names: dict[str, str] = {}
    free = [key for key in given if key not in input_keys]
    for key in input_keys:
        if key in given:
            names[key] = key
            continue
        by_name = [k for k in free if acceptance.key_name(k) == acceptance.key_name(key)]
        by_kind = [k for k in free if kind_of_value(given[k]) in _ACCEPTS.get(key, {key})]
        found = by_name or (by_kind if len(by_kind) == 1 else [])
        if not found and len(free) == 1 and len(input_keys) == 1:
            found = free
        if not found:
            return None
        names[key] = found[0]
        free.remove(found[0])
    return names


@dataclass(frozen=True)
class Fit:
    """A reading that reproduces every case: which case key feeds each input, which value each output is."""

    steps: list[Step]
    input_names: dict[str, str]
    outputs: dict[str, str]
    traces: list[tuple[JSON, dict[str, JSON]]]


def fit(steps: list[Step], pipeline: Any, run: Callable[[Any, JSON], dict[str, JSON]],
        cases: Sequence[Mapping[str, Any]]) -> Fit | None:
    """The wiring under which the pipeline reproduces every case, or None.

    ``run(pipeline, inputs)`` gives each node's input and output (the planner's reference run).
    """
    names = input_names(pipeline.input_keys, cases)
    if names is None:
        return None
    traces: list[tuple[JSON, dict[str, JSON]]] = []
    for case in cases:
        given = case.get("inputs") or {}
        inputs = {key: copy.deepcopy(given.get(source)) for key, source in names.items()}
        try:
            traces.append((inputs, run(pipeline, inputs)))
        except (ValueError, TypeError, KeyError, ArithmeticError, AttributeError, IndexError):
            return None
    # Every value the pipeline computes, terminal outputs first, later nodes before earlier ones.
    refs = list(pipeline.outputs.values())
    for agent in reversed(pipeline.agents):
        refs += [f"nodes.{agent.id}.output.{key}" for key in agent.produces
                 if f"nodes.{agent.id}.output.{key}" not in refs]
    outputs: dict[str, str] = {}
    wanted: list[str] = []
    for case in cases:
        loose = str(case.get("comparison") or "exact") == "key_names_equivalent"
        for key in case.get("expected") or {}:
            if key not in wanted and not (loose and any(acceptance.key_name(key) == acceptance.key_name(w)
                                                        for w in wanted)):
                wanted.append(key)
    for key in wanted:
        same_name = [r for r in refs if acceptance.key_name(r.rsplit(".", 1)[1]) == acceptance.key_name(key)]
        found = next((r for r in [*same_name, *refs] if _agrees(key, r, cases, traces)), None)
        if found is None:
            return None
        outputs[key] = found
    return Fit(steps, names, outputs, traces)


def _agrees(key: str, ref: str, cases: Sequence[Mapping[str, Any]],
            traces: Sequence[tuple[JSON, dict[str, JSON]]]) -> bool:
    """Whether the value at ``ref`` is the expected ``key`` in every case that expects it."""
    node, _, name = ref.split(".")[1:4]
    for case, (_inputs, trace) in zip(cases, traces, strict=True):
        expected = case.get("expected") or {}
        mode = str(case.get("comparison") or "exact")
        loose = mode == "key_names_equivalent"
        own = key if key in expected else next(
            (k for k in expected if loose and acceptance.key_name(k) == acceptance.key_name(key)), None)
        if own is None:
            continue
        got = trace[node]["output"].get(name, _MISSING)
        if got is _MISSING:
            return False
        if acceptance.mismatch({own: expected[own]}, {own: got}, mode, float(case.get("tolerance") or 0.0)):
            return False
    return True


_MISSING = object()


def single_step_readings(cases: Sequence[Mapping[str, Any]]) -> Iterator[list[Step]]:
    """When the rules find nothing: each template that needs no parameter from the text (and its
    alternatives) as a one-step pipeline, for the cases to choose from."""
    kinds = {kind_of_value(value) for case in cases for value in (case.get("inputs") or {}).values()}
    for name, template in TEMPLATES.items():
        params = template.params()
        consumes = set(template.consumes(params))
        if name in ("replace_text", "rename_fields", "select_fields", "drop_fields", "filter_records",
                    "pluck_field", "aggregate_by_field", "compute_field", "count_by_field", "sort_records"):
            continue  # they need field names or strings only the text can give
        if not any(kind in consumes or (kind == "numbers" and "numbers" in consumes) for kind in kinds):
            continue
        if name == "statistics":
            params = {**params, "measures": list(MEASURES)}
        yield [Step(name, params, 0, 0, name)]
        for other in ALTERNATIVES.get(name, lambda _p: [])(params):
            yield [Step(name, other, 0, 0, name)]
