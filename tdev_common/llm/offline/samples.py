"""Sample workflow inputs for a planned pipeline, shaped so every step has something to do."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from tdev_common.llm.offline.rules import Step

BASE_TEXTS = [
    "  The quick brown fox jumps over the lazy dog.  The dog sleeps!  ",
    "Hello,   World! Hello again, world.\nIs this the real life? It is.",
    "Data beats opinions; data, data, DATA.\n\nNumbers 3 and 4 and 3 again.",
]
_EMAIL_TEXTS = [
    "Contact alice@example.com or bob.smith@mail.example.org; alice@example.com again.",
    "No address here, only text.",
    "Write to support@t-dev.io, sales@t-dev.io and SUPPORT@t-dev.io.",
]
_URL_TEXTS = [
    "See https://example.com/docs and http://test.org/page?x=1.",
    "Nothing to see here.",
    "Mirror: https://a.example.net/path, again https://a.example.net/path!",
]
_NUMBER_TEXTS = [
    "Order 66 shipped 3 boxes at 12.5 each, 4 returned.",
    "Temperatures were 21, 19.5 and 23 degrees; 21 again.",
    "Scores: 10, 20, 30, 40 and 50.",
]
_PALINDROMES = ["A man, a plan, a canal: Panama", "Never odd or even", "Hello, world"]
_TITLES = ["Hello World: A Déjà Vu Story!", "  Python 3.11 -- What's New?  ", "Ten Tips for Better Tests"]
_WORD_LISTS = [
    ["the", "cat", "sat", "on", "the", "mat", "the", "end"],
    ["b", "a", "c", "b", "a", "b"],
    ["data", "beats", "opinions", "data", "wins"],
]
_NUMBER_LISTS: list[list[float | int]] = [[3, 1, 4, 1, 5, 9, 2, 6], [10, -2.5, 7, 7, 0, 12], [-4, 15, 8, 23, 42, 16, 8]]
_TEMPERATURES: list[list[float | int]] = [[0, 100, 37, -40], [20.5, 25, 30], [-10, 15.5]]

_NAMES = ["Ada", "Grace", "Linus", "Barbara", "Alan"]
_CITIES = ["Paris", "Lima", "Oslo", "Paris", "Lima"]
_STATUSES = ["active", "inactive", "active", "pending", "active"]
_NUMERIC_HINTS = ("price", "amount", "total", "cost", "score", "age", "count", "quantity", "qty", "weight",
                  "height", "salary", "value", "rating", "size", "year", "duration", "balance", "points", "stock")
_NUMERIC_BASES = [12.5, 30, 7.25, 45, 19.99]


def _numeric_values(name: str) -> list[float | int]:
    if "age" in name.lower():
        return [34, 27, 45, 19, 52]
    if any(hint in name.lower() for hint in ("count", "quantity", "qty", "year", "stock", "points")):
        return [3, 12, 7, 1, 9]
    return list(_NUMERIC_BASES)


def _field_values(name: str, condition: tuple[str, Any] | None) -> list[Any]:
    """Five values for a field, chosen by its name (and around a filter's threshold, if any)."""
    if condition is not None and condition[0] == "group":
        # Groups must repeat, or a per-group total is just each record's own value.
        if "city" in name.lower() or "region" in name.lower():
            return [_CITIES[0], _CITIES[1], _CITIES[0], _CITIES[1], _CITIES[2]]
        return ["alpha", "beta", "alpha", "beta", "gamma"]
    if condition is not None and condition[0] == "number":
        return _numeric_values(name) if any(hint in name.lower() for hint in _NUMERIC_HINTS) else [3, 1.5, 4, 10, 2]
    if condition is not None:
        op, value = condition
        if isinstance(value, bool):
            return [value, not value, value, not value, value]
        if isinstance(value, int | float):
            return [value + 5, value - 3, value, value + 12, value - 8]
        if op == "contains":
            return [f"{value} one", "other", f"big {value}", "none", str(value)]
        return [value, "other", value, "pending", value]
    lowered = name.lower()
    if lowered in ("id", "uid", "key") or lowered.endswith("_id"):
        return [1, 2, 3, 4, 5]
    if any(hint in lowered for hint in _NUMERIC_HINTS):
        return _numeric_values(name)
    if "mail" in lowered:
        return [f"{n.lower()}@example.com" for n in _NAMES]
    if "name" in lowered or lowered in ("user", "author", "owner"):
        return list(_NAMES)
    if "city" in lowered or "country" in lowered or "region" in lowered:
        return list(_CITIES)
    if "status" in lowered or "state" in lowered:
        return list(_STATUSES)
    if any(secret in lowered for secret in ("password", "secret", "token", "ssn")):
        return ["hunter2", "letmein", "pa55word", "qwerty", "dragon"]
    if "active" in lowered or lowered.startswith("is_") or lowered.startswith("has_"):
        return [True, False, True, True, False]
    if "date" in lowered or lowered.endswith("_at") or "time" in lowered:
        return ["2024-03-01", "2023-12-24", "2024-01-15", "2022-07-04", "2024-02-29"]
    return [f"{name}-{i}" for i in (3, 1, 4, 5, 2)]


def record_fields(steps: Sequence[Step]) -> tuple[list[str], dict[str, tuple[str, Any]], bool]:
    """Field names the pipeline touches (before renaming), filter conditions, and whether to nest."""
    fields: list[str] = ["id", "name"]
    conditions: dict[str, tuple[str, Any]] = {}
    nested = False
    renamed_to: set[str] = set()

    def add(name: str) -> None:
        if name not in fields and name not in renamed_to:
            fields.append(name)

    for step in steps:
        params = step.params
        if step.template == "rename_fields":
            for old, new in params.get("mapping", {}).items():
                add(old)
                renamed_to.add(new)
        elif step.template in ("select_fields", "drop_fields"):
            for name in params.get("fields", []):
                add(name)
        elif step.template in ("filter_records", "sort_records", "count_by_field", "pluck_field"):
            add(params["field"])
            if step.template == "filter_records":
                conditions[params["field"]] = (params["condition"], params["value"])
        elif step.template == "statistics" and "field" in step.extra:
            add(step.extra["field"])
        elif step.template == "aggregate_by_field":
            add(params["group"])
            conditions.setdefault(params["group"], ("group", None))
            if params["field"] not in renamed_to:
                add(params["field"])
                conditions.setdefault(params["field"], ("number", None))
        elif step.template == "compute_field":
            for name in (params["left"], params["right"]):
                add(name)
                conditions.setdefault(name, ("number", None))
            renamed_to.add(params["target"])
        elif step.template == "flatten_record":
            nested = True
    if not any(step.template in ("select_fields",) for step in steps):
        add("note")
    return fields, conditions, nested


def make_records(steps: Sequence[Step], count: int = 5, offset: int = 0) -> list[dict[str, Any]]:
    """``count`` records with the pipeline's fields; offset varies the values between samples."""
    fields, conditions, nested = record_fields(steps)
    records = []
    for index in range(count):
        position = (index + offset) % 5
        record: dict[str, Any] = {}
        for name in fields:
            value = _field_values(name, conditions.get(name))[position]
            if "." in name:  # a path into nested objects: build the nesting it names
                *parents, leaf = name.split(".")
                target = record
                for part in parents:
                    target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else target
                target[leaf] = value
            else:
                record[name] = value
        if "id" in record:
            record["id"] = index + 1 + offset * 10
        if nested:
            record["address"] = {"city": _CITIES[position], "zip": f"{75000 + position}"}
            record["meta"] = {"tags": {"primary": _STATUSES[position]}}
        records.append(record)
    return records


def to_csv(records: Sequence[dict[str, Any]], delimiter: str) -> str:
    """CSV text with a header row (flat records only)."""
    buffer = io.StringIO()
    names = list(records[0]) if records else []
    writer = csv.DictWriter(buffer, fieldnames=names, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: v for k, v in record.items() if not isinstance(v, dict)})
    return buffer.getvalue()


def _numbers(steps: Sequence[Step]) -> list[list[float | int]]:
    for step in steps:
        if step.template == "filter_numbers":
            value = step.params.get("value", 0.0)
            if step.params.get("condition") in ("even", "odd"):
                return [[1, 2, 3, 4, 5, 6], [10, 15, 20, 25], [7, 8, 9, 11, 14]]
            v = int(value) if float(value).is_integer() else value
            return [[v - 7, v + 3, v, v + 12.5, v - 1, v + 8], [v + 1, v - 2, v + 20, v + 5], [v + 2, v + 4, v - 9]]
        if step.template == "convert_temperature":
            return [list(t) for t in _TEMPERATURES]
    return [list(n) for n in _NUMBER_LISTS]


def _texts(steps: Sequence[Step]) -> list[str]:
    names = [step.template for step in steps]
    if "parse_csv" in names:
        delimiter = next(s.params.get("delimiter", ",") for s in steps if s.template == "parse_csv")
        return [to_csv(make_records(steps, 4, offset), delimiter) for offset in range(3)]
    if "extract_emails" in names:
        return list(_EMAIL_TEXTS)
    if "extract_urls" in names:
        return list(_URL_TEXTS)
    if "extract_numbers" in names:
        return list(_NUMBER_TEXTS)
    if "is_palindrome" in names:
        return list(_PALINDROMES)
    if "slugify" in names:
        return list(_TITLES)
    for step in steps:
        if step.template == "replace_text" and step.params.get("old"):
            old = str(step.params["old"])
            return [f"The {old} sat. Another {old} ran away.", f"No match here, {old.upper()} shouts.",
                    f"{old}{old} and {old}"]
    return list(BASE_TEXTS)


def workflow_samples(steps: Sequence[Step], input_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Three sample workflow inputs for the keys the pipeline reads from outside."""
    samples: list[dict[str, Any]] = [{}, {}, {}]
    for key in input_keys:
        if key == "text":
            values: list[Any] = _texts(steps)
        elif key == "words":
            values = [list(w) for w in _WORD_LISTS]
        elif key == "numbers":
            values = _numbers(steps)
        elif key == "records":
            values = [make_records(steps, 5 - offset, offset) for offset in range(3)]
        elif key == "record":
            values = [make_records(steps, 1, offset)[0] for offset in range(3)]
        else:
            values = [None, None, None]
        for sample, value in zip(samples, values, strict=True):
            sample[key] = value
    return samples
