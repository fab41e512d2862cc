"""What a build request must satisfy before it is accepted; defaults applied to its constraints."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from builder_svc.domain import Constraints, RequestedConstraints
from tdev_common.errors import FieldViolation, InvalidArgument, invalid_field, invalid_fields, require

MAX_REQUEST_ID_CHARS = 128
MAX_SAMPLE_BYTES = 256 * 1024
MAX_ACCEPTANCE_CASES = 50
# Where a ListBuilds page continues: (create time, build id) of the last build of the previous page.
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class Defaults:
    """Service defaults and upper limits of a build's constraints."""

    max_requirements_chars: int
    max_tokens: int
    max_cost_usd: float
    max_duration_seconds: float
    max_fix_attempts: int
    max_fix_attempts_limit: int
    max_sample_inputs: int


def _invalid(field: str, problem: str) -> InvalidArgument:
    return invalid_field(field, problem)


def check_requirements(text: str, max_chars: int) -> str:
    """The requirements, stripped.

    Raises:
        InvalidArgument: empty (or whitespace only) or longer than ``max_chars``.
    """
    stripped = text.strip()
    if not stripped:
        raise _invalid("requirements", "must not be empty")
    if len(stripped) > max_chars:
        raise _invalid("requirements", f"{len(stripped)} characters; the limit is {max_chars}")
    return stripped


def resolve_constraints(requested: RequestedConstraints, defaults: Defaults) -> Constraints:
    """Applies defaults to zero values and checks the rest.

    Raises:
        InvalidArgument: a negative or non-finite limit, too many fix attempts or sample inputs, or a
            sample input that is too large; every problem is listed.
    """
    problems: list[FieldViolation] = []
    for name in ("max_tokens", "max_cost_usd", "max_duration_seconds", "max_fix_attempts"):
        value = getattr(requested, name)
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            problems.append(FieldViolation(f"constraints.{name}", f"must be a positive number or 0, got {value}"))
    if requested.max_fix_attempts > defaults.max_fix_attempts_limit:
        problems.append(FieldViolation("constraints.max_fix_attempts",
                                       f"at most {defaults.max_fix_attempts_limit}, got {requested.max_fix_attempts}"))
    if len(requested.sample_inputs) > defaults.max_sample_inputs:
        problems.append(FieldViolation("constraints.sample_inputs",
                                       f"{len(requested.sample_inputs)} samples; at most {defaults.max_sample_inputs}"))
    for index, sample in enumerate(requested.sample_inputs):
        if len(json.dumps(sample, default=str)) > MAX_SAMPLE_BYTES:
            problems.append(FieldViolation(f"constraints.sample_inputs[{index}]",
                                           f"larger than {MAX_SAMPLE_BYTES // 1024} KiB"))
    if len(requested.acceptance_cases) > MAX_ACCEPTANCE_CASES:
        problems.append(FieldViolation("constraints.acceptance_cases", f"{len(requested.acceptance_cases)} cases; "
                                       f"at most {MAX_ACCEPTANCE_CASES}"))
    for index, case in enumerate(requested.acceptance_cases):
        where = f"constraints.acceptance_cases[{index}]"
        if not case.expected:
            problems.append(FieldViolation(f"{where}.expected", "must not be empty"))
        if case.tolerance < 0 or not math.isfinite(case.tolerance):
            problems.append(FieldViolation(f"{where}.tolerance",
                                           f"must be a positive number or 0, got {case.tolerance}"))
        if len(json.dumps(case.to_json(), default=str)) > MAX_SAMPLE_BYTES:
            problems.append(FieldViolation(where, f"larger than {MAX_SAMPLE_BYTES // 1024} KiB"))
    if problems:
        raise invalid_fields(problems)
    return Constraints(
        max_tokens=requested.max_tokens or defaults.max_tokens,
        max_cost_usd=requested.max_cost_usd or defaults.max_cost_usd,
        max_duration_seconds=requested.max_duration_seconds or defaults.max_duration_seconds,
        max_fix_attempts=requested.max_fix_attempts or defaults.max_fix_attempts,
        disable_reuse=requested.disable_reuse,
        sample_inputs=tuple(dict(sample) for sample in requested.sample_inputs),
        acceptance_cases=requested.acceptance_cases,
    )


def check_request_id(request_id: str) -> None:
    """Raises InvalidArgument when the idempotency key is too long."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise _invalid("request_id", f"{len(request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}")


def check_build_id(build_id: str) -> None:
    """Raises InvalidArgument (reason FIELD_REQUIRED) for an empty id."""
    require("build_id", build_id)
