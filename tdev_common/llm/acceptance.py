"""Acceptance cases: a caller's input -> expected output pairs and the rule comparing outputs with them.

One comparison for everyone who judges outputs against a caller's cases: the builder's validate stage (which
decides whether a build succeeds), the offline planner choosing between interpretations, and prompts that show
the cases to a model. Modes (docs/builder.md "Acceptance cases"):

- ``exact``: the outputs are exactly the expected object: same keys, equal values. Numbers compare by value
  within 1e-9 relative (values cross the workflow service as protobuf doubles, so 3 and 3.0 are equal);
  booleans are not numbers; lists in order.
- ``json_subset``: every key of an expected object is present with a matching value, recursively; extra keys
  anywhere are fine; lists match element by element, same length, in order.
- ``numeric_tolerance``: like ``exact``, but numbers equal within ``tolerance`` (absolute; default 1e-6).
- ``key_names_equivalent``: like ``exact``, but object keys are compared after :func:`key_name`: lower case
  with everything that is not a letter or a digit removed, so ``firstName``, ``first_name`` and
  ``First-Name`` are the same key (at every depth).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

Mode = Literal["exact", "json_subset", "numeric_tolerance", "key_names_equivalent"]
MODES: tuple[Mode, ...] = ("exact", "json_subset", "numeric_tolerance", "key_names_equivalent")
DEFAULT_TOLERANCE = 1e-6
_REL = 1e-9


class AcceptanceCase(TypedDict):
    """One caller case as prompts and the planner carry it."""

    inputs: dict[str, Any]
    expected: dict[str, Any]
    comparison: NotRequired[Mode]
    tolerance: NotRequired[float]
    name: NotRequired[str]


def key_name(key: str) -> str:
    """The key as ``key_names_equivalent`` compares it: ``"First-Name"`` -> ``"firstname"``."""
    return re.sub(r"[^0-9a-z]", "", key.casefold())


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _numbers_equal(expected: float, actual: float, tolerance: float | None) -> bool:
    if tolerance is not None:
        return abs(expected - actual) <= tolerance + 1e-12
    return expected == actual or math.isclose(expected, actual, rel_tol=_REL, abs_tol=1e-12)


def _diff(expected: Any, actual: Any, mode: Mode, tolerance: float | None, path: str) -> str | None:
    where = path or "outputs"
    if isinstance(expected, bool) or isinstance(actual, bool):
        if isinstance(expected, bool) and isinstance(actual, bool) and expected == actual:
            return None
        return f"{where}: expected {_short(expected)}, got {_short(actual)}"
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if _numbers_equal(float(expected), float(actual), tolerance):
            return None
        return f"{where}: expected {_short(expected)}, got {_short(actual)}"
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} items {_short(expected)}, got {len(actual)} {_short(actual)}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = _diff(e, a, mode, tolerance, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict) and isinstance(actual, dict):
        if mode == "key_names_equivalent":
            by_name = {key_name(str(k)): k for k in actual}
            matched = {k: by_name.get(key_name(str(k))) for k in expected}
            extra = set(by_name) - {key_name(str(k)) for k in expected}
        else:
            matched = {k: (k if k in actual else None) for k in expected}
            extra = set() if mode == "json_subset" else set(actual) - set(expected)
        for key, found in matched.items():
            inner = f"{path}.{key}" if path else str(key)
            if found is None:
                return f'{inner}: missing (keys: {sorted(str(k) for k in actual)})'
            problem = _diff(expected[key], actual[found], mode, tolerance, inner)
            if problem:
                return problem
        if extra:
            return f"{where}: unexpected keys {sorted(str(k) for k in extra)}"
        return None
    if type(expected) is type(actual) and expected == actual:
        return None
    return f"{where}: expected {_short(expected)}, got {_short(actual)}"


def mismatch(expected: Mapping[str, Any], actual: Mapping[str, Any] | None, mode: str = "exact",
             tolerance: float = 0.0) -> str | None:
    """Why ``actual`` does not meet ``expected`` under the mode, or None when it does.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown comparison {mode!r}; one of {', '.join(MODES)}")
    if actual is None:
        return "no outputs"
    limit = (tolerance or DEFAULT_TOLERANCE) if mode == "numeric_tolerance" else None
    return _diff(dict(expected), dict(actual), mode, limit, "")  # type: ignore[arg-type]


def passes(case: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """Whether outputs meet an :class:`AcceptanceCase`."""
    return mismatch(case.get("expected") or {}, actual, str(case.get("comparison") or "exact"),
                    float(case.get("tolerance") or 0.0)) is None
