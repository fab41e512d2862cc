"""Agent: descriptive statistics of a list of numbers."""

from __future__ import annotations

import statistics
from typing import Any


class ListStats:
    """Count, sum, min, max, mean, median and population standard deviation of ``inputs["numbers"]``."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "list_stats",
            "description": "Computes statistics of a list of numbers: count, sum, min, max, mean, median, stdev.",
            "tags": ["math", "statistics", "numbers", "mean", "median"],
            "input_schema": {
                "type": "object",
                "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
                "required": ["numbers"],
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer"},
                    "sum": {"type": "number"},
                    "min": {"type": ["number", "null"]},
                    "max": {"type": ["number", "null"]},
                    "mean": {"type": ["number", "null"]},
                    "median": {"type": ["number", "null"]},
                    "stdev": {"type": ["number", "null"]},
                },
            },
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns the statistics (nulls for an empty list); raises ValueError on non-numbers."""
        numbers = inputs.get("numbers")
        if not isinstance(numbers, list) or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ValueError("inputs.numbers must be a list of numbers")
        if not numbers:
            return {"count": 0, "sum": 0, "min": None, "max": None, "mean": None, "median": None, "stdev": None}
        return {
            "count": len(numbers),
            "sum": sum(numbers),
            "min": min(numbers),
            "max": max(numbers),
            "mean": statistics.fmean(numbers),
            "median": statistics.median(numbers),
            "stdev": statistics.pstdev(numbers),
        }
