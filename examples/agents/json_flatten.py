"""Agent: flattens nested JSON into one level of dotted keys."""

from __future__ import annotations

from typing import Any


class JsonFlatten:
    """Turns ``{"a": {"b": 1}, "c": [2]}`` into ``{"a.b": 1, "c.0": 2}``."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "json_flatten",
            "description": "Flattens nested JSON objects and arrays into dotted keys.",
            "tags": ["json", "flatten", "nested", "transform"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "data": {"type": "object"},
                    "separator": {"type": "string", "default": "."},
                },
                "required": ["data"],
            },
            "output_schema": {"type": "object", "properties": {"data": {"type": "object"}}},
        }

    def _flatten(self, value: Any, prefix: str, separator: str, out: dict[str, Any]) -> None:
        """Writes the leaves of ``value`` into ``out`` under ``prefix``."""
        if isinstance(value, dict) and value:
            for key, child in value.items():
                self._flatten(child, f"{prefix}{separator}{key}" if prefix else str(key), separator, out)
        elif isinstance(value, list) and value:
            for index, child in enumerate(value):
                self._flatten(child, f"{prefix}{separator}{index}" if prefix else str(index), separator, out)
        else:
            out[prefix] = value

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"data": flat}``; raises ValueError unless data is an object."""
        data = inputs.get("data")
        if not isinstance(data, dict):
            raise ValueError("inputs.data must be an object")
        separator = str(inputs.get("separator", "."))
        flat: dict[str, Any] = {}
        self._flatten(data, "", separator, flat)
        return {"data": flat}
