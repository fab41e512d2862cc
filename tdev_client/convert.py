"""Proto messages <-> the plain values callers use: dicts with the proto's field names, ``Struct`` fields as
dicts (whole numbers as ints), enums by name, int64 as int, ``Timestamp`` as an RFC 3339 string and
``Duration`` as float seconds. Every field is present in a dict the client returns (defaults included), but a
message field that is unset is left out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tdev_client.errors import InvalidArgument
from tdev_common.protojson import whole_numbers

M = TypeVar("M", bound=Message)
_JSON_WELL_KNOWN = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


def to_dict(message: Message) -> dict[str, Any]:
    """A message as plain values (see the module docstring)."""
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and not _is_repeated(field) and not message.HasField(field.name):
            continue
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name) != field.name:
            continue
        if field.message_type is None and getattr(field, "has_presence", False) and not message.HasField(field.name):
            continue  # an ``optional`` scalar left unset is not its default
        result[field.name] = _field_value(field, getattr(message, field.name))
    return result


def _is_repeated(field: Any) -> bool:
    # ``is_repeated`` on protobuf >= 6; ``label`` before (the upb descriptor has no common stub type)
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _field_value(field: Any, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _single(value_field, item) for key, item in value.items()}
    if _is_repeated(field):
        return [_single(field, item) for item in value]
    return _single(field, value)


def _single(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.message_type is None:
        return value
    full_name = field.message_type.full_name
    if full_name in _JSON_WELL_KNOWN:
        return whole_numbers(json_format.MessageToDict(value))
    if full_name == "google.protobuf.Timestamp":
        return value.ToJsonString()
    if full_name == "google.protobuf.Duration":
        return value.ToTimedelta().total_seconds()
    return to_dict(value)


def from_dict(values: Mapping[str, Any], message_class: type[M]) -> M:
    """A request from plain values; an unknown field or a wrong type raises :class:`InvalidArgument` (reason
    ``REQUEST_NOT_BUILT``) naming it, before anything is sent."""
    try:
        return json_format.ParseDict(_drop_none(dict(values)), message_class())
    except json_format.ParseError as error:
        message = str(error).split("\n", 1)[0]
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, message, "REQUEST_NOT_BUILT",
                              rpc=message_class.DESCRIPTOR.full_name) from None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments left at None mean "not set", which ParseDict would read as null."""
    return {key: value for key, value in values.items() if value is not None}
