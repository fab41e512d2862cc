"""Fitness from a measurement: correctness first, then speed and size as small secondary objectives.

``fitness = correctness * (1 - speed_weight - size_weight) + speed_weight * speed + size_weight * size``,
and 0 when no case passes (an invalid or crashing program scores 0 whatever its size).

Speed is compared with the seed program in factor-of-two steps and durations under ``SPEED_FLOOR_MS``
count as equal: timing noise of fast programs then cannot change a score, so runs stay reproducible.
Size is ``seed_size / (seed_size + size)`` (0.5 for the seed, higher when smaller).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from evolution_svc.domain import Candidate, Measurement

SPEED_FLOOR_MS = 1.0
DIGITS = 9


@dataclass(frozen=True)
class FitnessBasis:
    """What a run's fitness is relative to: the case weights and the seed program's speed and size."""

    weights: tuple[float, ...]
    reference_size: int
    reference_duration_ms: float
    speed_weight: float
    size_weight: float


def correctness(scores: Sequence[float], weights: Sequence[float]) -> float:
    """Weighted mean of the per-case scores, in [0, 1]."""
    total = sum(weights)
    if total <= 0 or not scores:
        return 0.0
    return round(sum(w * s for w, s in zip(weights, scores, strict=True)) / total, DIGITS)


def speed_score(mean_duration_ms: float, reference_duration_ms: float) -> float:
    """0.5 for the seed's speed, +0.25 per halving and -0.25 per doubling of the time, in [0, 1]."""
    effective = max(mean_duration_ms, SPEED_FLOOR_MS)
    reference = max(reference_duration_ms, SPEED_FLOOR_MS)
    steps = round(math.log2(reference / effective))
    return min(1.0, max(0.0, 0.5 + 0.25 * steps))


def size_score(size: int, reference_size: int) -> float:
    """``reference / (reference + size)``: 0.5 at the seed's size, towards 1 when smaller."""
    return reference_size / (reference_size + max(size, 1))


def fitness(measurement: Measurement, size: int, basis: FitnessBasis) -> tuple[float, float]:
    """(fitness, correctness) of a measured program."""
    passed = correctness(measurement.case_scores, basis.weights)
    if passed <= 0:
        return 0.0, 0.0
    primary = 1.0 - basis.speed_weight - basis.size_weight
    value = (
        passed * primary
        + basis.speed_weight * speed_score(measurement.mean_duration_ms, basis.reference_duration_ms)
        + basis.size_weight * size_score(size, basis.reference_size)
    )
    return round(value, DIGITS), passed


def make_candidate(
    *,
    code: str,
    code_hash: str,
    ast_hash: str,
    size: int,
    measurement: Measurement,
    basis: FitnessBasis,
    generation: int,
    operator: str,
    parent_hashes: tuple[str, ...],
) -> Candidate:
    """A candidate with its fitness computed; the failure reason is kept only when it scored 0."""
    value, passed = fitness(measurement, size, basis)
    failure = ""
    if value == 0:
        failure = measurement.failure or (measurement.failures[0].detail if measurement.failures else "")
        failure = failure or "no case passed"
    return Candidate(
        code=code,
        code_hash=code_hash,
        ast_hash=ast_hash,
        size=size,
        generation=generation,
        operator=operator,
        parent_hashes=parent_hashes,
        fitness=value,
        correctness=passed,
        mean_duration_ms=round(measurement.mean_duration_ms, 3),
        failure=failure,
        failures=measurement.failures,
        case_scores=tuple(measurement.case_scores),
        wrong_keys=measurement.wrong_keys,
        case_closeness=tuple(measurement.case_closeness),
    )
