"""Scoring modes on JSON data and the fitness formula, with exact values."""

from __future__ import annotations

import pytest

from evolution_svc.domain import CaseFailure, Measurement, ScoringMode
from evolution_svc.fitness import FitnessBasis, correctness, fitness, make_candidate, size_score, speed_score
from evolution_svc.scoring import matches, score_output, scorer_score

pytestmark = pytest.mark.unit  # no I/O


@pytest.mark.parametrize(
    ("mode", "actual", "expected", "score"),
    [
        (ScoringMode.EXACT, {"a": 3}, {"a": 3.0}, 1.0),
        (ScoringMode.EXACT, {"a": True}, {"a": 1}, 0.0),
        (ScoringMode.EXACT, {"a": 1, "b": 2}, {"a": 1}, 0.0),
        (ScoringMode.EXACT, {"a": [1, "x"]}, {"a": [1, "x"]}, 1.0),
        (ScoringMode.NUMERIC_TOLERANCE, {"a": 1.0000001}, {"a": 1.0}, 1.0),
        (ScoringMode.NUMERIC_TOLERANCE, {"a": 1.1}, {"a": 1.0}, 0.0),
        (ScoringMode.NUMERIC_TOLERANCE, {"a": float("nan")}, {"a": float("nan")}, 0.0),
        (ScoringMode.NUMERIC_TOLERANCE, {"a": "1"}, {"a": 1}, 0.0),
        (ScoringMode.JSON_SUBSET, {"a": 1, "extra": 2}, {"a": 1}, 1.0),
        (ScoringMode.JSON_SUBSET, {"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, 1.0),
        (ScoringMode.JSON_SUBSET, {"b": 1}, {"a": 1}, 0.0),
    ],
)
def test_score_output_compares_json_values(mode: ScoringMode, actual: object, expected: object, score: float) -> None:
    assert score_output(mode, actual, expected, 1e-6) == score


def test_deeply_nested_output_scores_zero_instead_of_crashing() -> None:
    deep: object = 1
    for _ in range(500):
        deep = [deep]
    assert matches({"a": deep}, {"a": deep}, tolerance=None, subset=False) is False


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ({"score": 0.25}, 0.25),
        ({"score": 7}, 1.0),
        ({"score": -1}, 0.0),
        ({"score": "1"}, 0.0),
        ({"score": True}, 0.0),
        ({"score": float("nan")}, 0.0),
        (None, 0.0),
    ],
)
def test_scorer_answers_are_clamped_and_typed(answer: object, score: float) -> None:
    assert scorer_score(answer) == score


BASIS = FitnessBasis(
    weights=(1.0, 1.0, 2.0), reference_size=100, reference_duration_ms=4.0, speed_weight=0.01, size_weight=0.01
)


def test_fitness_is_correctness_first_then_speed_and_size() -> None:
    measured = Measurement(case_scores=(1.0, 0.0, 1.0), mean_duration_ms=2.0)
    # correctness 3/4; speed one halving -> 0.75; size 100/(100+100) = 0.5
    assert fitness(measured, 100, BASIS) == (round(0.75 * 0.98 + 0.01 * 0.75 + 0.01 * 0.5, 9), 0.75)
    assert correctness((1.0, 0.0, 1.0), (1.0, 1.0, 2.0)) == 0.75


def test_speed_is_bucketed_so_fast_programs_are_equally_fast() -> None:
    assert speed_score(0.01, 0.5) == 0.5
    assert speed_score(0.9, 0.2) == 0.5
    assert speed_score(8.0, 2.0) == 0.0
    assert speed_score(1.0, 4.0) == 1.0
    assert size_score(50, 100) == pytest.approx(2 / 3)


def test_a_program_that_passes_nothing_scores_zero_with_its_reason() -> None:
    measured = Measurement(
        case_scores=(0.0, 0.0, 0.0),
        mean_duration_ms=0.0,
        failure="every case failed; first: ZeroDivisionError: division by zero",
        failures=(CaseFailure(0, "c0: ZeroDivisionError: division by zero"),),
    )
    candidate = make_candidate(
        code="x",
        code_hash="h",
        ast_hash="a",
        size=3,
        measurement=measured,
        basis=BASIS,
        generation=2,
        operator="mutate:constant",
        parent_hashes=("p",),
    )
    assert (candidate.fitness, candidate.correctness) == (0.0, 0.0)
    assert candidate.failure == "every case failed; first: ZeroDivisionError: division by zero"
