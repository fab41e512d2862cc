"""Agent: counts the words, characters and lines of a text."""

from __future__ import annotations

from typing import Any


class WordCount:
    """Counts words (whitespace separated), characters and lines of ``inputs["text"]``."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "word_count",
            "description": "Counts the words, characters and lines of a text.",
            "tags": ["text", "count", "words", "statistics"],
            "input_schema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "words": {"type": "integer"},
                    "characters": {"type": "integer"},
                    "lines": {"type": "integer"},
                },
            },
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"words": n, "characters": n, "lines": n}``; raises ValueError without text."""
        text = inputs.get("text")
        if not isinstance(text, str):
            raise ValueError("inputs.text must be a string")
        return {
            "words": len(text.split()),
            "characters": len(text),
            "lines": len(text.splitlines()) if text else 0,
        }
