"""JSON answers: the instruction that asks for them, parsing, schema validation and the repair prompt."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 600


class JSONOutputError(ValueError):
    """The text is not JSON, or not valid for the schema; the message says where."""


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The system-prompt paragraph asking for JSON valid against the schema."""
    return ("Reply with one JSON value and nothing else (no prose, no markdown fences). It must validate "
            "against this JSON Schema:\n" + json.dumps(schema, sort_keys=True))


def parse_json(text: str) -> Any:
    """Parses a model's answer, tolerating a markdown fence or prose around one JSON object.

    Raises:
        JSONOutputError: when no JSON value can be read.
    """
    stripped = text.strip()
    candidates = [stripped]
    fenced = _FENCE.search(stripped)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    first_error: json.JSONDecodeError | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError as error:
            first_error = first_error or error
    detail = f"{first_error.msg} at line {first_error.lineno} column {first_error.colno}" if first_error else ""
    raise JSONOutputError(f"answer is not valid JSON: {detail}".strip())


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raises jsonschema.SchemaError when the caller's schema itself is invalid.

    Checked once per distinct schema (by its JSON text, which is also what the model is shown): checking
    against the metaschema costs far more than the key, and services ask with the same few schemas on every
    call. A bad schema is never remembered, so it fails every time.
    """
    try:
        key: str | None = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _VALID_SCHEMAS:
        return
    Draft202012Validator.check_schema(schema)
    if key is not None:
        if len(_VALID_SCHEMAS) >= _MAX_REMEMBERED_SCHEMAS:
            _VALID_SCHEMAS.clear()
        _VALID_SCHEMAS.add(key)


_VALID_SCHEMAS: set[str] = set()
_MAX_REMEMBERED_SCHEMAS = 256


def validate(data: Any, schema: Mapping[str, Any]) -> None:
    """Raises JSONOutputError naming the most relevant violation and its path."""
    validator = Draft202012Validator(schema)
    error = best_match(validator.iter_errors(data))
    if error is None:
        return
    path = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    count = sum(1 for _ in validator.iter_errors(data))
    message = f"{path}: {error.message}"
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + "..."
    more = f" (and {count - 1} more violations)" if count > 1 else ""
    raise JSONOutputError(f"answer does not match the schema: {message}{more}")


def parse_and_validate(text: str, schema: Mapping[str, Any]) -> Any:
    """parse_json then validate; raises JSONOutputError."""
    data = parse_json(text)
    validate(data, schema)
    return data


def repair_prompt(error: JSONOutputError) -> str:
    """The user message of the repair round."""
    return (f"Your previous answer was rejected: {error}. Reply again with only the corrected JSON value, "
            "valid against the schema given in the system message.")
