"""Checks of suites and configurations (INVALID_ARGUMENT naming the field and case), and the held-out split."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import replace

import jsonschema

from evolution_svc.domain import (
    MAX_CASES,
    CaseCheck,
    EvaluationCase,
    EvaluationSuite,
    EvolutionConfig,
    JsonValue,
    OperatorSet,
    ScoringMode,
)
from tdev_common.errors import FieldViolation, invalid_field, invalid_fields

INVALID_SUITE = "INVALID_SUITE"
INVALID_CONFIG = "INVALID_CONFIG"
MAX_POPULATION = 1000
MAX_GENERATIONS = 10_000
DEFAULT_TOLERANCE = 1e-6


def _case_label(index: int, case: EvaluationCase) -> str:
    return f"suite.cases[{index}]" + (f' ("{case.name}")' if case.name else "")


def _check_named(name: object, index: int) -> CaseCheck:
    try:
        return CaseCheck(name or CaseCheck.EXPECTED.value)
    except ValueError:
        raise invalid_field(f"suite.cases[{index}].check", f"unknown check {name!r}; one of "
                            + ", ".join(check.value for check in CaseCheck), reason=INVALID_SUITE) from None


def _schema_problems(schema: object, path: str) -> list[FieldViolation]:
    if not isinstance(schema, dict):
        return [FieldViolation(path, "must be a JSON Schema object")]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        return [FieldViolation(path, f"is not a valid JSON Schema: {error.message}")]
    return []


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def validate_suite(suite: EvaluationSuite) -> EvaluationSuite:
    """The suite with defaults filled in (weight 1, tolerance 1e-6).

    Raises:
        InvalidArgument: naming the first bad case (and listing every violation as field violations).
    """
    violations: list[FieldViolation] = []
    if not suite.cases:
        raise invalid_field("suite.cases", "the suite has no cases", reason=INVALID_SUITE)
    if len(suite.cases) > MAX_CASES:
        violations.append(FieldViolation("suite.cases", f"{len(suite.cases)} cases; at most {MAX_CASES}"))
    names: dict[str, int] = {}
    cases: list[EvaluationCase] = []
    for index, case in enumerate(suite.cases):
        label = _case_label(index, case)
        if not isinstance(case.inputs, dict):
            violations.append(FieldViolation(f"{label}.inputs", "must be a JSON object"))
        if case.check is CaseCheck.NO_ERROR:
            if case.expected is not None:
                violations.append(FieldViolation(f"{label}.expected", "must be unset with CASE_CHECK_NO_ERROR "
                                                 "(the case only checks that execute does not fail)"))
            if case.output_schema is not None:
                violations.extend(_schema_problems(case.output_schema, f"{label}.output_schema"))
        elif case.expected is None:
            violations.append(FieldViolation(f"{label}.expected", "is missing"))
        elif not isinstance(case.expected, dict):
            violations.append(FieldViolation(f"{label}.expected", "must be a JSON object"))
        elif case.output_schema is not None:
            violations.append(FieldViolation(f"{label}.output_schema", "is only used with CASE_CHECK_NO_ERROR"))
        weight = 1.0 if case.weight == 0 else case.weight
        if not _finite(weight) or weight < 0:
            violations.append(FieldViolation(f"{label}.weight", f"must be a positive number, got {case.weight}"))
        if case.name:
            if case.name in names:
                violations.append(
                    FieldViolation(f"{label}.name", f'duplicate of suite.cases[{names[case.name]}] "{case.name}"')
                )
            names.setdefault(case.name, index)
        cases.append(replace(case, weight=weight))
    tolerance = suite.tolerance or DEFAULT_TOLERANCE
    if not _finite(tolerance) or tolerance < 0:
        violations.append(FieldViolation("suite.tolerance", f"must be a non-negative number, got {suite.tolerance}"))
    if suite.scoring_mode is ScoringMode.SCORER_AGENT and not suite.scorer_agent_id:
        violations.append(FieldViolation("suite.scorer_agent_id", "is required with SCORING_MODE_SCORER_AGENT"))
    if not _finite(suite.held_out_fraction) or not 0 <= suite.held_out_fraction < 1:
        violations.append(FieldViolation("suite.held_out_fraction", "must be in [0, 1)"))
    if cases and all(case.held_out for case in cases):
        violations.append(FieldViolation("suite.cases", "every case is held out; at least one training case is needed"))
    if violations:
        raise invalid_fields(violations, reason=INVALID_SUITE)
    return replace(suite, cases=tuple(cases), tolerance=tolerance)


def split_held_out(suite: EvaluationSuite, seed: int) -> EvaluationSuite:
    """Marks ``held_out_fraction`` of the cases as held out (seeded) when no case is marked already.

    At least one case stays for training. The split depends only on the seed and the suite.
    """
    if any(case.held_out for case in suite.cases) or suite.held_out_fraction <= 0:
        return suite
    count = min(len(suite.cases) - 1, round(len(suite.cases) * suite.held_out_fraction))
    if count <= 0:
        return suite
    chosen = set(random.Random(f"held-out:{seed}").sample(range(len(suite.cases)), count))
    return replace(
        suite,
        cases=tuple(replace(case, held_out=index in chosen) for index, case in enumerate(suite.cases)),
    )


def _check(violations: list[FieldViolation], ok: bool, field: str, description: str) -> None:
    if not ok:
        violations.append(FieldViolation(f"config.{field}", description))


def validate_config(config: EvolutionConfig) -> EvolutionConfig:
    """Checks the effective configuration.

    Raises:
        InvalidArgument: naming the first bad field.
    """
    v: list[FieldViolation] = []
    _check(v, 2 <= config.population_size <= MAX_POPULATION, "population_size", f"must be 2..{MAX_POPULATION}")
    _check(v, 1 <= config.generations <= MAX_GENERATIONS, "generations", f"must be 1..{MAX_GENERATIONS}")
    for name in ("mutation_rate", "crossover_rate"):
        value = getattr(config, name)
        _check(v, _finite(value) and 0 <= value <= 1, name, "must be in [0, 1]")
    _check(v, config.mutation_rate > 0 or config.crossover_rate > 0, "mutation_rate",
           "mutation_rate and crossover_rate are both 0: nothing would ever vary")
    _check(v, 1 <= config.islands <= config.population_size // 2 or config.islands == 1, "islands",
           "must be at least 1 with at least 2 candidates per island")
    per_island = config.population_size // max(config.islands, 1)
    _check(v, 0 <= config.elitism < per_island, "elitism", f"must be 0..{per_island - 1} (below the island size)")
    _check(v, config.tournament_size >= 1, "tournament_size", "must be at least 1")
    _check(v, config.migration_interval >= 0, "migration_interval", "must not be negative")
    _check(v, 0 <= config.migration_size < per_island, "migration_size", "must be below the island size")
    _check(v, config.max_evaluations >= 1, "max_evaluations", "must be at least 1")
    _check(v, _finite(config.max_cost_usd) and config.max_cost_usd >= 0, "max_cost_usd", "must not be negative")
    _check(v, _finite(config.max_duration_seconds) and config.max_duration_seconds > 0, "max_duration_seconds",
           "must be positive")
    _check(v, config.plateau_generations >= 0, "plateau_generations", "must not be negative")
    _check(v, _finite(config.promotion_margin) and config.promotion_margin >= 0, "promotion_margin",
           "must not be negative")
    for name in ("speed_weight", "size_weight"):
        value = getattr(config, name)
        _check(v, _finite(value) and 0 <= value < 0.5, name, "must be in [0, 0.5)")
    _check(v, config.operators is not OperatorSet.UNSPECIFIED, "operators", "must be resolved")
    if v:
        raise invalid_fields(v, reason=INVALID_CONFIG)
    return config


SCORING_NAMES: dict[str, ScoringMode] = {
    **{mode.value: mode for mode in ScoringMode},
    **{f"SCORING_MODE_{mode.name}": mode for mode in ScoringMode},
}


def suite_from_json(data: Mapping[str, JsonValue]) -> EvaluationSuite:
    """A suite from its JSON file form (``examples/evolution/*/suite.json``), not yet validated.

    Raises:
        InvalidArgument: for a file that is not a suite, naming the case.
    """
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list):
        raise invalid_field("suite.cases", "must be a list of cases", reason=INVALID_SUITE)
    mode_name = str(data.get("scoring_mode") or "exact")
    if mode_name not in SCORING_NAMES:
        raise invalid_field("suite.scoring_mode", f"unknown mode {mode_name!r}", reason=INVALID_SUITE)
    cases: list[EvaluationCase] = []
    for index, raw in enumerate(raw_cases):
        if not isinstance(raw, dict):
            raise invalid_field(f"suite.cases[{index}]", "must be an object", reason=INVALID_SUITE)
        cases.append(
            EvaluationCase(
                name=str(raw.get("name", "")),
                inputs=raw.get("inputs"),  # type: ignore[arg-type]
                expected=raw.get("expected"),  # type: ignore[arg-type]
                held_out=bool(raw.get("held_out", False)),
                weight=float(raw.get("weight", 1.0)),
                check=_check_named(raw.get("check"), index),
                output_schema=raw.get("output_schema"),  # type: ignore[arg-type]
            )
        )
    return EvaluationSuite(
        cases=tuple(cases),
        scoring_mode=SCORING_NAMES[mode_name],
        tolerance=float(data.get("tolerance") or 0.0),
        scorer_agent_id=str(data.get("scorer_agent_id", "")),
        scorer_agent_version=str(data.get("scorer_agent_version", "")),
        held_out_fraction=float(data.get("held_out_fraction") or 0.0),
    )
