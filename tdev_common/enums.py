"""One enum rule: a domain enum and its proto enum share member NAMES, and every convert.py maps by name here.

The rule:

- A domain enum member ``X`` stands for the proto value ``<prefix>X`` (``RunState.RUNNING`` <->
  ``EvolutionRun.State.STATE_RUNNING``). Numbers are never compared, so a domain enum's values are free to be
  what its storage needs: text where a column stores text, the old integers where a column stores integers
  (storage does not change with this rule).
- ``<prefix>UNSPECIFIED`` maps to the domain member named ``UNSPECIFIED`` when there is one; otherwise the
  caller says what it means: a default (``default=``), "no filter" (:func:`optional_from_proto`), or
  required (an error).
- A number the proto does not define, or a name with no domain counterpart, is INVALID_ARGUMENT with a
  field violation on the request field (reason ``INVALID_FIELD``, as the services already answered for an
  unknown enum value).
- tests/foundation/test_enum_mapping.py checks that every domain member has a proto counterpart and back.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from tdev_common.errors import invalid_field

E = TypeVar("E", bound=enum.Enum)
P = TypeVar("P", bound=int)

UNSPECIFIED = "UNSPECIFIED"


def to_proto(member: enum.Enum, wrapper: type[P], prefix: str) -> P:
    """The proto value named ``prefix + member.name``.

    ``wrapper`` is the generated enum (``agent_pb2.AgentAnalysis.State``); the result is typed as it, so it
    can be passed to a message constructor without a cast.

    Raises:
        ValueError: the proto has no such name (a programming error; the mapping test catches it).
    """
    return cast(P, _wrapper(wrapper).Value(prefix + member.name))


def from_proto(number: int, domain: type[E], wrapper: Any, prefix: str, *, field: str,
               default: E | None = None) -> E:
    """The domain member a proto number stands for (by name); UNSPECIFIED gives ``default`` when one is given.

    Raises:
        InvalidArgument: an unknown number, or UNSPECIFIED where there is no default and no UNSPECIFIED member.
    """
    member = optional_from_proto(number, domain, wrapper, prefix, field=field)
    if member is not None:
        return member
    if default is not None:
        return default
    raise invalid_field(field, "is required")


def optional_from_proto(number: int, domain: type[E], wrapper: Any, prefix: str, *, field: str) -> E | None:
    """Like :func:`from_proto`, but UNSPECIFIED without a domain UNSPECIFIED member is None (e.g. "no filter").

    Raises:
        InvalidArgument: an unknown number.
    """
    try:
        name = _wrapper(wrapper).Name(number)
    except ValueError:
        raise invalid_field(field, f"unknown value {number}") from None
    short = name.removeprefix(prefix)
    if short in domain.__members__:
        return domain[short]
    if short == UNSPECIFIED:
        return None
    raise invalid_field(field, f"unsupported value {name}")


def proto_names(wrapper: Any, prefix: str) -> set[str]:
    """The names of a proto enum without its prefix (for the mapping test)."""
    return {name.removeprefix(prefix) for name in _wrapper(wrapper).keys()}


def _wrapper(wrapper: Any) -> EnumTypeWrapper:
    # The generated stubs declare enums as int subclasses; at run time each is an EnumTypeWrapper instance.
    return cast(EnumTypeWrapper, wrapper)
