"""Agent: extracts the most frequent meaningful words of a text."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or our she that the "
    "their them they this to was we were will with you your".split()
)


class KeywordExtract:
    """Ranks the words of ``inputs["text"]`` by frequency, ignoring stop words and short words."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "keyword_extract",
            "description": "Extracts the top keywords of a text by frequency, skipping stop words.",
            "tags": ["text", "keywords", "extract", "frequency", "nlp"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "top_k": {"type": "integer", "minimum": 1, "default": 5},
                    "min_length": {"type": "integer", "minimum": 1, "default": 3},
                },
                "required": ["text"],
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "keywords": {"type": "array", "items": {"type": "string"}},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"keywords": [...], "counts": {word: n}}``, most frequent first, ties alphabetical."""
        text = inputs.get("text")
        if not isinstance(text, str):
            raise ValueError("inputs.text must be a string")
        top_k = int(inputs.get("top_k", 5))
        min_length = int(inputs.get("min_length", 3))
        if top_k < 1 or min_length < 1:
            raise ValueError("top_k and min_length must be at least 1")
        words = [w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) >= min_length and w not in STOPWORDS]
        ranked = sorted(Counter(words).items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return {"keywords": [word for word, _ in ranked], "counts": dict(ranked)}
