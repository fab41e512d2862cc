"""Agent: parses CSV text into a list of records (objects keyed by the header row)."""

from __future__ import annotations

import csv
import io
from typing import Any


class CsvToRecords:
    """Parses ``inputs["csv"]``; numeric cells become numbers when ``inputs["infer_types"]`` is true."""

    def get_capabilities(self) -> dict[str, Any]:
        """What the agent does, with its input and output schemas."""
        return {
            "name": "csv_to_records",
            "description": "Parses CSV text with a header row into a list of JSON records.",
            "tags": ["csv", "parse", "records", "data", "table", "transform"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "csv": {"type": "string"},
                    "delimiter": {"type": "string", "default": ","},
                    "infer_types": {"type": "boolean", "default": True},
                },
                "required": ["csv"],
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "records": {"type": "array", "items": {"type": "object"}},
                    "columns": {"type": "array", "items": {"type": "string"}},
                },
            },
        }

    def _cell(self, value: str, infer_types: bool) -> Any:
        """A cell as int, float or the original string."""
        if not infer_types:
            return value
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
        return value

    def execute(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{"records": [...], "columns": [...]}``; raises ValueError on bad input."""
        text = inputs.get("csv")
        if not isinstance(text, str):
            raise ValueError("inputs.csv must be a string")
        delimiter = str(inputs.get("delimiter", ","))
        if len(delimiter) != 1:
            raise ValueError("inputs.delimiter must be one character")
        infer_types = bool(inputs.get("infer_types", True))
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        records = [
            {key: self._cell(value or "", infer_types) for key, value in row.items() if key is not None}
            for row in reader
        ]
        return {"records": records, "columns": list(reader.fieldnames or [])}
