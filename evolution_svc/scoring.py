"""Comparing a case's output with its expected output, in the service's process, on JSON data only.

The candidate's output arrives as decoded JSON (from the sandbox), so nothing it returns can carry
behaviour (no custom ``__eq__``); numbers compare by value as in JSON, booleans never equal numbers,
NaN equals nothing, and structures nested deeper than ``MAX_DEPTH`` score 0.
"""

from __future__ import annotations

import difflib
import math

from evolution_svc.domain import JsonValue, ScoringMode

MAX_DEPTH = 64


def _is_number(value: JsonValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_match(actual: float, expected: float, tolerance: float | None) -> bool:
    if math.isnan(actual) or math.isnan(expected):
        return False
    if tolerance is None:
        return actual == expected
    if math.isinf(actual) or math.isinf(expected):
        return actual == expected
    return abs(actual - expected) <= max(tolerance, tolerance * abs(expected))


def matches(actual: JsonValue, expected: JsonValue, *, tolerance: float | None, subset: bool, depth: int = 0) -> bool:
    """Whether ``actual`` matches ``expected``.

    ``tolerance`` None means exact numbers; ``subset`` lets objects carry extra keys (recursively).
    """
    if depth > MAX_DEPTH:
        return False
    if _is_number(expected):
        return _is_number(actual) and _numbers_match(float(actual), float(expected), tolerance)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(
                matches(a, e, tolerance=tolerance, subset=subset, depth=depth + 1)
                for a, e in zip(actual, expected, strict=True)
            )
        )
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        if not subset and set(actual) != set(expected):
            return False
        return all(
            key in actual and matches(actual[key], value, tolerance=tolerance, subset=subset, depth=depth + 1)
            for key, value in expected.items()
        )
    return False


def score_output(mode: ScoringMode, actual: JsonValue, expected: JsonValue, tolerance: float) -> float:
    """1.0 when the output matches under ``mode``, else 0.0 (scorer agents are scored elsewhere).

    Raises:
        ValueError: for SCORER_AGENT, which needs the sandbox.
    """
    if mode is ScoringMode.EXACT:
        return float(matches(actual, expected, tolerance=None, subset=False))
    if mode is ScoringMode.NUMERIC_TOLERANCE:
        return float(matches(actual, expected, tolerance=tolerance, subset=False))
    if mode is ScoringMode.JSON_SUBSET:
        return float(matches(actual, expected, tolerance=None, subset=True))
    raise ValueError(f"{mode.value} is scored by running the scorer agent")


def scorer_score(answer: JsonValue) -> float:
    """The score in a scorer agent's answer ``{"score": x}``, clamped to [0, 1]; 0 for anything else."""
    if not isinstance(answer, dict):
        return 0.0
    value = answer.get("score")
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


# Below a pass, a near miss never reaches 1: closeness ranks failures, it never turns one into a pass.
NEAR_MISS = 0.99
TEXT_CHARS = 200


def _number(value: JsonValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _similarity(actual: JsonValue, expected: JsonValue) -> float:
    """How close two JSON values are, in [0, 1] (1 for equal ones)."""
    if matches(actual, expected, tolerance=None, subset=False):
        return 1.0
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or not expected:
            return 0.0
        shared = sum(_similarity(actual[key], value) for key, value in expected.items() if key in actual)
        return shared / len(set(expected) | set(actual))
    if _number(expected):
        if not _number(actual) or not math.isfinite(actual):
            return 0.0
        return 1.0 / (1.0 + abs(actual - expected) / max(1.0, abs(expected)))
    if isinstance(expected, str | list):
        if type(actual) is not type(expected):
            return 0.0
        left = actual[:TEXT_CHARS] if isinstance(actual, str) else [repr(item) for item in actual[:TEXT_CHARS]]
        right = expected[:TEXT_CHARS] if isinstance(expected, str) else [repr(item) for item in expected[:TEXT_CHARS]]
        return difflib.SequenceMatcher(None, left, right, autojunk=False).ratio()
    return 0.0


def closeness(score: float, actual: JsonValue, expected: JsonValue) -> float:
    """A graded per-case score for selection only (lexicase): the case's score when it passed, else how near
    the output came (numbers by relative distance, strings and lists by sequence similarity, objects key
    by key), scaled below 1. Fitness never reads it."""
    if score >= 1.0 or expected is None:
        return score
    return round(max(score, NEAR_MISS * _similarity(actual, expected)), 6)
