"""google.protobuf.Struct <-> JSON values, keeping whole numbers whole (Struct stores only doubles)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

_SAFE_INTEGER = 2**53


def whole_numbers(value: Any) -> Any:
    """``3.0`` becomes ``3`` (recursively) so agents see the ints their callers sent."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict, whole numbers as ints."""
    return whole_numbers(json_format.MessageToDict(message))  # type: ignore[no-any-return]


def dict_to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A Struct from JSON-ready values (None gives an empty one)."""
    message = struct_pb2.Struct()
    if value:
        message.update(dict(value))
    return message
