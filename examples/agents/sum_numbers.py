"""Agent: adds up a list of numbers."""

from __future__ import annotations

import math
from typing import Any


class SumNumbers:
    """Sums ``inputs["numbers"]`` exactly (``math.fsum`` for floats)."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "sum_numbers",
            "description": "Adds up a list of numbers and returns the total.",
            "tags": ["math", "sum", "add", "numbers", "total"],
            "input_schema": {
                "type": "object",
                "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
                "required": ["numbers"],
            },
            "output_schema": {"type": "object", "properties": {"total": {"type": "number"}}},
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"total": sum}`` (an int when every number is an int); raises ValueError otherwise."""
        numbers = inputs.get("numbers")
        if not isinstance(numbers, list) or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ValueError("inputs.numbers must be a list of numbers")
        if all(isinstance(n, int) for n in numbers):
            return {"total": sum(numbers)}
        return {"total": math.fsum(numbers)}
