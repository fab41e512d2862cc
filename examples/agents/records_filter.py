"""Agent: keeps the records whose field compares true against a value (async execute)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "contains": lambda field, value: value in field,
}


class RecordsFilter:
    """Filters ``inputs["records"]`` by ``record[field] <op> value``; records without the field are dropped."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "records_filter",
            "description": "Filters a list of JSON records by comparing one field with a value.",
            "tags": ["records", "filter", "data", "json", "query"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "records": {"type": "array", "items": {"type": "object"}},
                    "field": {"type": "string"},
                    "op": {"type": "string", "enum": sorted(OPERATORS), "default": "eq"},
                    "value": {},
                },
                "required": ["records", "field", "value"],
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "records": {"type": "array", "items": {"type": "object"}},
                    "count": {"type": "integer"},
                },
            },
        }

    def _matches(self, record: dict[str, Any], field: str, compare: Callable[[Any, Any], bool], value: Any) -> bool:
        """Whether ``record[field] <op> value`` holds; a missing field or incomparable types do not match."""
        if field not in record:
            return False
        try:
            return bool(compare(record[field], value))
        except TypeError:
            return False

    async def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"records": kept, "count": n}``; raises ValueError on bad input."""
        records, field = inputs.get("records"), inputs.get("field")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("inputs.records must be a list of objects")
        if not isinstance(field, str):
            raise ValueError("inputs.field must be a string")
        compare = OPERATORS.get(str(inputs.get("op", "eq")))
        if compare is None:
            raise ValueError(f"inputs.op must be one of {sorted(OPERATORS)}")
        value = inputs.get("value")
        kept = [record for record in records if self._matches(record, field, compare, value)]
        return {"records": kept, "count": len(kept)}
