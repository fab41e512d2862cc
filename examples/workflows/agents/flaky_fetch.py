"""Agent used by examples/workflows/retries.json: fails on its first attempts, then returns its numbers."""

from __future__ import annotations

from typing import Any


class FlakyFetch:
    """Fails while ``inputs["attempt"] <= inputs["fail_times"]`` (pass ``{"$ref": "context.attempt"}``)."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does."""
        return {
            "name": "flaky_fetch",
            "description": "Stands in for a flaky upstream: fails on the first attempts, then returns numbers.",
            "tags": ["example", "retries"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "attempt": {"type": "integer"},
                    "fail_times": {"type": "integer"},
                    "numbers": {"type": "array", "items": {"type": "number"}},
                },
                "required": ["attempt", "fail_times"],
            },
            "output_schema": {"type": "object", "properties": {"numbers": {"type": "array"}, "attempt": {}}},
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Raises ConnectionError on early attempts; returns ``{"numbers": [...], "attempt": n}`` after."""
        attempt = int(inputs["attempt"])
        if attempt <= int(inputs["fail_times"]):
            raise ConnectionError(f"upstream unavailable (attempt {attempt})")
        return {"numbers": list(inputs.get("numbers", [])), "attempt": attempt}
