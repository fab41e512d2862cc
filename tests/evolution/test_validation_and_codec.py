"""Suite and config validation (errors name the case), the held-out split, checkpoints and promotion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evolution_svc import codec
from evolution_svc.archive import Archive, insert
from evolution_svc.domain import (
    EvaluationCase,
    EvaluationLimits,
    EvaluationSuite,
    EvolutionConfig,
    OperatorSet,
    ScoringMode,
)
from evolution_svc.fitness import FitnessBasis
from evolution_svc.population import Totals, initial_state
from evolution_svc.promotion import Evidence, decide
from evolution_svc.validation import split_held_out, suite_from_json, validate_config, validate_suite
from tdev_common.errors import InvalidArgument
from tests.evolution.test_search_parts import cand

pytestmark = pytest.mark.unit  # no I/O

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "evolution"


def case(name: str = "", **fields: object) -> EvaluationCase:
    values: dict[str, object] = {"name": name, "inputs": {"x": 1}, "expected": {"y": 2}}
    values.update(fields)
    return EvaluationCase(**values)  # type: ignore[arg-type]


def test_empty_suite_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match=r"^suite.cases: the suite has no cases$"):
        validate_suite(EvaluationSuite(cases=()))


def test_malformed_case_is_named_with_every_violation_listed() -> None:
    suite = EvaluationSuite(cases=(case("ok"), case("bad", expected=None), case("", inputs=[1]), case("ok")))
    with pytest.raises(InvalidArgument) as raised:
        validate_suite(suite)
    # The message names the first problem and counts the rest; the violations list every one.
    assert raised.value.message == 'suite.cases[1] ("bad").expected: is missing (and 2 more problems)'
    assert [v.field for v in raised.value.violations] == [
        'suite.cases[1] ("bad").expected',
        "suite.cases[2].inputs",
        'suite.cases[3] ("ok").name',
    ]


def test_defaults_are_filled_and_scorer_mode_needs_a_scorer() -> None:
    suite = validate_suite(EvaluationSuite(cases=(case("a", weight=0.0),)))
    assert (suite.cases[0].weight, suite.tolerance) == (1.0, 1e-6)
    with pytest.raises(InvalidArgument, match=r"suite\.scorer_agent_id: is required"):
        validate_suite(EvaluationSuite(cases=(case("a"),), scoring_mode=ScoringMode.SCORER_AGENT))
    with pytest.raises(InvalidArgument, match="every case is held out"):
        validate_suite(EvaluationSuite(cases=(case("a", held_out=True),)))


def test_held_out_split_is_seeded_and_keeps_training_cases() -> None:
    suite = EvaluationSuite(cases=tuple(case(f"c{i}") for i in range(10)), held_out_fraction=0.3)
    split = split_held_out(suite, 5)
    assert len(split.held_out) == 3 and len(split.training) == 7
    assert split == split_held_out(suite, 5)
    marked = replace(suite, cases=(case("m", held_out=True), *suite.cases[1:]))
    assert split_held_out(marked, 5) is marked


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A population of 1 also leaves no room for the default islands, elitism and migration size.
        ({"population_size": 1}, "config.population_size: must be 2..1000 (and 3 more problems)"),
        ({"mutation_rate": 1.5}, "config.mutation_rate: must be in [0, 1]"),
        ({"elitism": 25}, "config.elitism: must be 0..24 (below the island size)"),
        ({"speed_weight": 0.7}, "config.speed_weight: must be in [0, 0.5)"),
        ({"max_evaluations": 0}, "config.max_evaluations: must be at least 1"),
    ],
)
def test_config_errors_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_config(replace(EvolutionConfig(), **change))  # type: ignore[arg-type]
    assert raised.value.message == message


@pytest.mark.parametrize("task", ["shipping_cost", "slugify", "dispatcher"])
def test_example_suites_load_and_validate(task: str) -> None:
    suite = validate_suite(suite_from_json(json.loads((EXAMPLES / task / "suite.json").read_text())))
    assert len(suite.training) >= 15 and len(suite.held_out) >= 5


def test_checkpoint_round_trips_the_whole_state() -> None:
    config = EvolutionConfig(seed=9, islands=2, operators=OperatorSet.MIXED)
    seed = cand("s", 0.4)
    state = initial_state(
        seed, config, FitnessBasis((1.0, 2.0), 10, 1.5, 0.01, 0.01), Totals(evaluations=1), EvaluationLimits(0.5, 3.0)
    )
    state = replace(
        state,
        islands=((seed, cand("t", 0.6)), (seed,)),
        archive=insert(Archive(), cand("t", 0.6), 10),
        history=(0.4, 0.6),
        stagnant=1,
        totals=Totals(3, 1, 0.25, 2.5),
    )
    assert codec.decode_state(codec.encode_state(state)) == state
    assert codec.config_from_json(codec.config_to_json(config)) == config


@pytest.mark.parametrize(
    ("evidence", "promote", "reason"),
    [
        (
            Evidence(0.4, 0.9, 0.01, False, True, 6),
            True,
            "the best candidate beats the original on 6 held-out cases: 0.9000 vs 0.4000, margin 0.01",
        ),
        (
            Evidence(0.4, 0.405, 0.01, False, True, 6),
            False,
            "the best candidate does not beat the original by the margin on 6 held-out cases: 0.4050 vs 0.4000, "
            "margin 0.01",
        ),
        (
            Evidence(0.4, 0.4, 0.01, True, True, 6),
            False,
            "no candidate beat the original program: the best candidate is the original",
        ),
        (
            Evidence(0.4, 0.9, 0.01, False, False, 0),
            False,
            "promotion is disabled for this run; the best candidate beats the original on the training cases "
            "(the suite has no held-out cases): 0.9000 vs 0.4000, margin 0.01",
        ),
    ],
)
def test_promotion_decision_says_why(evidence: Evidence, promote: bool, reason: str) -> None:
    decision = decide(evidence)
    assert (decision.promote, decision.reason) == (promote, reason)
