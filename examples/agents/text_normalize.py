"""Agent: normalises text (Unicode form, case, whitespace, optional punctuation removal)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any


class TextNormalize:
    """Normalises ``inputs["text"]``: NFKC, lower case, collapsed whitespace, optionally no punctuation."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "text_normalize",
            "description": "Normalises text: unicode NFKC, lower case, collapsed whitespace, punctuation removal.",
            "tags": ["text", "normalize", "clean", "lowercase", "whitespace"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "lowercase": {"type": "boolean", "default": True},
                    "strip_punctuation": {"type": "boolean", "default": False},
                },
                "required": ["text"],
            },
            "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        }

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"text": normalised}``; raises ValueError without text."""
        text = inputs.get("text")
        if not isinstance(text, str):
            raise ValueError("inputs.text must be a string")
        result = unicodedata.normalize("NFKC", text)
        if inputs.get("lowercase", True):
            result = result.lower()
        if inputs.get("strip_punctuation", False):
            result = "".join(ch for ch in result if not unicodedata.category(ch).startswith("P"))
        result = re.sub(r"\s+", " ", result).strip()
        return {"text": result}
