"""``{"$ref": "..."}`` references in node inputs: finding, checking and resolving them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CONTEXT_KEYS = frozenset({"attempt", "execution_id", "node_id", "workflow_id"})


class RefError(Exception):
    """A reference is malformed or points at nothing; the message says which and why."""


@dataclass(frozen=True)
class Ref:
    """A parsed reference: ``inputs.<key>...``, ``nodes.<id>.output...`` or ``context.<key>``."""

    text: str
    scope: str
    name: str
    path: tuple[str, ...]


def parse(text: str) -> Ref:
    """Parses a reference string.

    Raises:
        RefError: when it is not one of the three documented forms.
    """
    if not isinstance(text, str) or not text:
        raise RefError("a $ref must be a non-empty string")
    parts = text.split(".")
    if any(part == "" for part in parts):
        raise RefError(f'"{text}" has an empty path segment')
    scope = parts[0]
    if scope == "inputs":
        if len(parts) < 2:
            raise RefError(f'"{text}" must name an input: inputs.<key>')
        return Ref(text, "inputs", parts[1], tuple(parts[2:]))
    if scope == "nodes":
        if len(parts) < 3 or parts[2] != "output":
            raise RefError(f'"{text}" must read an output: nodes.<id>.output[.<path>]')
        return Ref(text, "nodes", parts[1], tuple(parts[3:]))
    if scope == "context":
        if len(parts) != 2 or parts[1] not in CONTEXT_KEYS:
            raise RefError(f'"{text}" must be one of context.{", context.".join(sorted(CONTEXT_KEYS))}')
        return Ref(text, "context", parts[1], ())
    raise RefError(f'"{text}" must start with inputs., nodes. or context.')


def ref_text(value: Any) -> str | None:
    """The reference string when ``value`` is a ``{"$ref": ...}`` object, else None."""
    if isinstance(value, dict) and len(value) == 1 and "$ref" in value:
        target = value["$ref"]
        return target if isinstance(target, str) else ""
    return None


def find(value: Any, path: str = "inputs") -> Iterator[tuple[str, str]]:
    """Yields (field path, reference text) for every reference inside ``value``."""
    text = ref_text(value)
    if text is not None:
        yield path, text
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from find(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find(item, f"{path}[{index}]")


def _walk(value: Any, path: tuple[str, ...], ref: Ref) -> Any:
    for step in path:
        if isinstance(value, Mapping):
            if step not in value:
                raise RefError(f'"{ref.text}": no key "{step}"')
            value = value[step]
        elif isinstance(value, list):
            try:
                value = value[int(step)]
            except (ValueError, IndexError) as error:
                raise RefError(f'"{ref.text}": no list item "{step}"') from error
        else:
            raise RefError(f'"{ref.text}": cannot read "{step}" of a {type(value).__name__}')
    return value


def resolve(
    value: Any,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    context: Mapping[str, Any],
) -> Any:
    """Returns ``value`` with every reference replaced by what it points at.

    Raises:
        RefError: when a reference points at a missing input, output or key.
    """
    text = ref_text(value)
    if text is not None:
        ref = parse(text)
        if ref.scope == "inputs":
            if ref.name not in inputs:
                raise RefError(f'"{text}": the execution has no input "{ref.name}"')
            return _walk(inputs[ref.name], ref.path, ref)
        if ref.scope == "nodes":
            if ref.name not in outputs:
                raise RefError(f'"{text}": node "{ref.name}" has no output')
            return _walk(outputs[ref.name], ref.path, ref)
        return context[ref.name]
    if isinstance(value, dict):
        return {key: resolve(item, inputs, outputs, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, inputs, outputs, context) for item in value]
    return value
