"""Agent: keeps only the named fields of a JSON object (or of each object in a list)."""

from __future__ import annotations

from typing import Any


class JsonSelectFields:
    """Projects ``inputs["data"]`` (an object or a list of objects) onto ``inputs["fields"]``."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "json_select_fields",
            "description": "Selects named fields from a JSON object or from every object of a list.",
            "tags": ["json", "select", "fields", "projection", "transform"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "data": {"type": ["object", "array"]},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "keep_missing": {"type": "boolean", "default": False},
                },
                "required": ["data", "fields"],
            },
            "output_schema": {"type": "object", "properties": {"data": {"type": ["object", "array"]}}},
        }

    def _select(self, item: dict[str, Any], fields: list[str], keep_missing: bool) -> dict[str, Any]:
        """One object reduced to ``fields`` (missing ones as null when ``keep_missing``)."""
        if keep_missing:
            return {field: item.get(field) for field in fields}
        return {field: item[field] for field in fields if field in item}

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"data": projected}``; raises ValueError on malformed inputs."""
        data, fields = inputs.get("data"), inputs.get("fields")
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError("inputs.fields must be a list of strings")
        keep_missing = bool(inputs.get("keep_missing", False))
        if isinstance(data, dict):
            return {"data": self._select(data, fields, keep_missing)}
        if isinstance(data, list) and all(isinstance(item, dict) for item in data):
            return {"data": [self._select(item, fields, keep_missing) for item in data]}
        raise ValueError("inputs.data must be an object or a list of objects")
