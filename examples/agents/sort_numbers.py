"""Agent: sorts a list of numbers."""

from __future__ import annotations

from typing import Any


class SortNumbers:
    """Sorts ``inputs["numbers"]`` ascending, or descending when ``inputs["descending"]`` is true."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "sort_numbers",
            "description": "Sorts a list of numbers in ascending or descending order.",
            "tags": ["math", "sort", "order", "numbers", "list"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "numbers": {"type": "array", "items": {"type": "number"}},
                    "descending": {"type": "boolean", "default": False},
                },
                "required": ["numbers"],
            },
            "output_schema": {
                "type": "object",
                "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
            },
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"numbers": sorted}``; raises ValueError on non-numbers."""
        numbers = inputs.get("numbers")
        if not isinstance(numbers, list) or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ValueError("inputs.numbers must be a list of numbers")
        return {"numbers": sorted(numbers, reverse=bool(inputs.get("descending", False)))}
