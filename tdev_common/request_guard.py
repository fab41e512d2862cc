"""Rules every request of every RPC obeys, checked from its descriptor before any handler runs.

Each rule stops a value that would otherwise fail deep inside a service as INTERNAL: Postgres rejects NUL
characters; protobuf cannot serialise a non-finite number inside a Struct (nor can JSON carry one); a Timestamp
outside years 1..9999 cannot be converted; an id of 20,000 characters echoed in an error overflows the
caller's metadata limit; an enum number the contract does not define means the caller speaks another version.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tdev_common.errors import FieldViolation, InvalidArgument

MAX_ID_LENGTH = 256
MAX_PAGE_TOKEN_LENGTH = 4096
# Violations listed in one error: enough to fix a request in one go, bounded so the error stays small.
MAX_VIOLATIONS = 50
# Struct depth that the JSON and database layers accept (protobuf itself stops decoding at 100 levels of
# messages, which is about 33 Struct levels).
MAX_STRUCT_DEPTH = 32

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_MIN_SECONDS = -62_135_596_800
_TIMESTAMP_MAX_SECONDS = 253_402_300_799
_DURATION_MAX_SECONDS = 315_576_000_000
_NANOS_MAX = 999_999_999

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"

_STRING = FieldDescriptor.TYPE_STRING
_ENUM = FieldDescriptor.TYPE_ENUM
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
# The field types ``single`` checks; other scalars (ints, bools, bytes) have no rule.
_CHECKED_KINDS = frozenset({_STRING, _ENUM, _MESSAGE, *_FLOATS})


def id_length_limit(field_name: str) -> int | None:
    """The length limit of a string field by its name: ids, versions and hashes are short; tokens bounded."""
    if field_name.endswith("page_token"):
        return MAX_PAGE_TOKEN_LENGTH
    if (
        field_name == "id"
        or field_name.endswith(("_id", "_ids", "_version", "_hash", "_hashes"))
        or field_name in ("version", "depends_on")
    ):
        return MAX_ID_LENGTH
    return None


def shorten(value: str, limit: int = 60) -> str:
    """A value short enough to echo in an error message."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


def _string_problem(value: str, limit: int | None) -> str | None:
    if "\x00" in value:
        return "must not contain the NUL character (\\u0000)"
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are allowed"
    return None


def _number_problem(value: float) -> str | None:
    if math.isnan(value):
        return "must be a finite number, not NaN"
    if math.isinf(value):
        return "must be a finite number, not Infinity"
    return None


# Per field descriptor: (type, is a map, is repeated, length limit of its strings). Descriptors never change,
# and reading them through the protobuf API costs more than the checks themselves.
_PLANS: dict[Any, tuple[int, bool, bool, int | None]] = {}


def _plan(field: Any) -> tuple[int, bool, bool, int | None]:
    plan = _PLANS.get(field)
    if plan is None:
        kind = field.type
        is_map = kind == _MESSAGE and field.message_type.GetOptions().map_entry
        plan = (kind, bool(is_map), bool(field.is_repeated), id_length_limit(field.name))
        _PLANS[field] = plan
    return plan


class _Checker:
    # Descriptors are typed Any: the stubs mark message_type/enum_type optional where the field's type
    # guarantees them.
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(FieldViolation(field=path, description=description))

    def message(self, message: Message, path: str) -> None:
        name = message.DESCRIPTOR.full_name
        if name == _STRUCT:
            self.struct(message, path, 1)
            return
        if name == _VALUE:
            self.value(message, path, 1)
            return
        if name == _LIST_VALUE:
            self.list_value(message, path, 1)
            return
        if name == _TIMESTAMP:
            self.timestamp(message, path)
            return
        if name == _DURATION:
            self.duration(message, path)
            return
        for field, value in message.ListFields():
            self.field(field, value, f"{path}.{field.name}" if path else field.name)

    def field(self, field: Any, value: Any, path: str) -> None:
        kind, is_map, is_repeated, _ = _plan(field)
        if is_map:
            self.map(field.message_type, value, path)
            return
        if is_repeated:
            if kind in _CHECKED_KINDS:
                for index, item in enumerate(value):
                    self.single(field, item, f"{path}[{index}]")
            return
        self.single(field, value, path)

    def single(self, field: Any, value: Any, path: str) -> None:
        kind, _, _, limit = _plan(field)
        if kind == _STRING:
            problem = _string_problem(value, limit)
            if problem:
                self.add(path, problem)
        elif kind == _MESSAGE:
            self.message(value, path)
        elif kind == _ENUM:
            if field.enum_type.values_by_number.get(value) is None:
                known = ", ".join(v.name for v in field.enum_type.values)
                self.add(path, f"unknown {field.enum_type.name} value {value}; known values: {known}")
        elif kind in _FLOATS:
            problem = _number_problem(value)
            if problem:
                self.add(path, problem)

    def map(self, entry: Any, container: Any, path: str) -> None:
        key_field = entry.fields_by_name["key"]
        value_field = entry.fields_by_name["value"]
        for key in container:
            item_path = f"{path}[{shorten(str(key))!r}]"
            if key_field.type == _STRING:
                problem = _string_problem(key, MAX_ID_LENGTH)
                if problem:
                    self.add(f"{path} key {shorten(key)!r}", problem)
            self.single(value_field, container[key], item_path)

    def struct(self, struct: Any, path: str, depth: int) -> None:
        if depth > MAX_STRUCT_DEPTH:
            self.add(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
            return
        for key, value in struct.fields.items():
            if "\x00" in key:
                self.add(_key_path(path, key), "keys must not contain the NUL character (\\u0000)")
            if _clean_leaf(value):  # most values: no path is built for them
                continue
            self.value(value, _key_path(path, key), depth)

    def list_value(self, values: Any, path: str, depth: int) -> None:
        if depth > MAX_STRUCT_DEPTH:
            self.add(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
            return
        for index, value in enumerate(values.values):
            if not _clean_leaf(value):
                self.value(value, f"{path}[{index}]", depth)

    def value(self, value: Any, path: str, depth: int) -> None:
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            problem = _number_problem(value.number_value)
            if problem:
                self.add(path, problem)
        elif kind == "string_value":
            problem = _string_problem(value.string_value, None)
            if problem:
                self.add(path, problem)
        elif kind == "struct_value":
            self.struct(value.struct_value, path, depth + 1)
        elif kind == "list_value":
            self.list_value(value.list_value, path, depth + 1)

    def timestamp(self, stamp: Any, path: str) -> None:
        if not _TIMESTAMP_MIN_SECONDS <= stamp.seconds <= _TIMESTAMP_MAX_SECONDS:
            self.add(path, "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
        if not 0 <= stamp.nanos <= _NANOS_MAX:
            self.add(f"{path}.nanos", f"must lie in 0..{_NANOS_MAX}")

    def duration(self, duration: Any, path: str) -> None:
        if not -_DURATION_MAX_SECONDS <= duration.seconds <= _DURATION_MAX_SECONDS:
            self.add(path, f"must lie within +/-{_DURATION_MAX_SECONDS} seconds")
        if not -_NANOS_MAX <= duration.nanos <= _NANOS_MAX or duration.seconds * duration.nanos < 0:
            self.add(f"{path}.nanos", f"must lie in -{_NANOS_MAX}..{_NANOS_MAX} with the sign of seconds")


def _key_path(path: str, key: str) -> str:
    return f"{path}.{shorten(key)}" if path else shorten(key)


def _clean_leaf(value: Any) -> bool:
    """True for a Struct value that is a scalar breaking no rule (what ``value`` would find nothing in)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return "\x00" not in value.string_value
    if kind == "number_value":
        return math.isfinite(value.number_value)
    return kind != "struct_value" and kind != "list_value"


def request_violations(request: Message) -> list[FieldViolation]:
    """Every way ``request`` breaks the rules every RPC shares (at most ``MAX_VIOLATIONS``)."""
    checker = _Checker()
    checker.message(request, "")
    return checker.violations


def check_request(request: Message) -> None:
    """Raises InvalidArgument listing every violation of the shared request rules; returns when there is none.

    Raises:
        InvalidArgument: with reason ``INVALID_REQUEST`` and a BadRequest field violation per problem.
    """
    violations = request_violations(request)
    if violations:
        raise invalid_request(violations)


def invalid_request(violations: list[FieldViolation]) -> InvalidArgument:
    """The error for a request that breaks the shared rules, naming each field."""
    first = violations[0]
    more = f" (and {len(violations) - 1} more problems)" if len(violations) > 1 else ""
    return InvalidArgument(
        f"{first.field}: {first.description}{more}", reason="INVALID_REQUEST", violations=violations
    )
