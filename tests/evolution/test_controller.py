"""The engine on the real sandbox: seeded reproducibility, the fitness cache, the duplicate check, LLM
operators through a scripted model, and the evaluator's handling of crashing and invalid programs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evolution_svc.budgets import stop_decision
from evolution_svc.controller import Controller
from evolution_svc.domain import EvaluationLimits, EvolutionConfig, GenerationReport, OperatorSet
from evolution_svc.evaluator import Evaluator
from evolution_svc.population import EngineState
from evolution_svc.sandbox_runner import SandboxRunner
from tests.evolution.conftest import example_code, example_suite
from tests.unit.fakes.evolution import MemoryCache, ScriptedModel

pytestmark = pytest.mark.mesh  # real servers or subprocesses

CONFIG = EvolutionConfig(
    population_size=12,
    generations=4,
    islands=2,
    elitism=1,
    seed=42,
    plateau_generations=0,
    speed_weight=0.0,
    operators=OperatorSet.PROGRAM_TRANSFORM,
)


async def evolve(
    controller: Controller, code: str, config: EvolutionConfig
) -> tuple[EngineState, list[GenerationReport]]:
    state = await controller.start(code)
    reports = []
    while stop_decision(state, config) is None:
        state, report = await controller.step(state)
        reports.append(report)
    return state, reports


def without_timing(reports: list[GenerationReport]) -> list[GenerationReport]:
    return [replace(report, duration_ms=0.0, cache_hits=0) for report in reports]


async def test_the_same_seed_gives_the_same_run(runner: SandboxRunner) -> None:
    suite = example_suite("dispatcher")
    runs = []
    for _ in range(2):
        controller = Controller(CONFIG, Evaluator(runner, suite, suite.training))
        runs.append(await evolve(controller, example_code("dispatcher"), CONFIG))
    (first_state, first), (second_state, second) = runs
    assert without_timing(first) == without_timing(second)
    assert (first_state.best.code, first_state.best.fitness) == (second_state.best.code, second_state.best.fitness)
    other = replace(CONFIG, seed=43)
    _, third = await evolve(
        Controller(other, Evaluator(runner, suite, suite.training)), example_code("dispatcher"), other
    )
    assert without_timing(third) != without_timing(first)


async def test_cached_measurements_answer_a_repeated_run(runner: SandboxRunner) -> None:
    suite = example_suite("slugify")
    cache = MemoryCache()
    _, first = await evolve(
        Controller(CONFIG, Evaluator(runner, suite, suite.training, cache=cache)), example_code("slugify"), CONFIG
    )
    assert [r.cache_hits for r in first] == [0, 0, 0, 0]
    _, second = await evolve(
        Controller(CONFIG, Evaluator(runner, suite, suite.training, cache=cache)), example_code("slugify"), CONFIG
    )
    assert [r.cache_hits for r in second] == [r.evaluations for r in second]
    assert without_timing(second) == without_timing(first)


async def test_duplicates_are_dropped_before_evaluation(runner: SandboxRunner) -> None:
    suite = example_suite("shipping_cost")
    state, reports = await evolve(
        Controller(CONFIG, Evaluator(runner, suite, suite.training)), example_code("shipping_cost"), CONFIG
    )
    assert sum(r.duplicates_skipped for r in reports) > 0
    evaluated = [c.ast_hash for island in state.islands for c in island if c.generation > 0]
    assert len(set(state.seen)) == 1 + sum(r.evaluations for r in reports)
    assert len(evaluated) == len(set(evaluated)) or all(r.diversity < 1 for r in reports[-1:])


async def test_crashing_and_invalid_programs_score_zero_with_the_reason(runner: SandboxRunner) -> None:
    suite = example_suite("slugify")
    evaluator = Evaluator(runner, suite, suite.training, limits=EvaluationLimits(0.3, 2.0))
    crashing = example_code("slugify").replace('text = inputs["text"]', "text = 1 / 0")
    measured = (await evaluator.measure(crashing)).measurement
    assert measured.case_scores == (0.0,) * len(suite.training)
    assert measured.failure == "every case failed; first: ZeroDivisionError: division by zero"
    invalid = (await evaluator.measure("class Broken:\n    def execute(self, inputs)\n")).measurement
    assert invalid.failure == "SyntaxError: expected ':' (line 2)"
    looping = example_code("slugify").replace(
        'text = inputs["text"]', "text = inputs['text']\n        while True: pass"
    )
    measured = (await evaluator.measure(looping)).measurement
    assert measured.failure == "every case failed; first: timeout: the program used up its time budget of 2 s"


async def test_llm_operators_send_failing_cases_and_count_cost(runner: SandboxRunner) -> None:
    suite = example_suite("dispatcher")
    fix = {"edits": [{"search": "* machine", "replace": "/ machine"}]}
    model = ScriptedModel([fix] * 40, price=0.01)
    config = replace(CONFIG, operators=OperatorSet.LLM, generations=1, mutation_rate=1.0, crossover_rate=0.0)
    controller = Controller(config, Evaluator(runner, suite, suite.training), model=model)
    state, reports = await evolve(controller, example_code("dispatcher"), config)
    assert "expected" in model.calls[0] and "speed" in model.calls[0]
    # 40 answers: the first child is new, the other 39 are the same program; later calls fail (no answer left).
    assert (reports[0].evaluations, reports[0].duplicates_skipped, reports[0].cost_usd) == (1, 39, 0.4)
    assert state.best.operator == "llm:diff"
    assert '/ machine["speed"]' in state.best.code
    assert state.best.correctness > state.seed.correctness


async def test_a_mixed_run_uses_the_model_and_the_synthesis_operators_together(runner: SandboxRunner) -> None:
    suite = example_suite("dispatcher")
    fix = {"edits": [{"search": "* machine", "replace": "/ machine"}]}
    model = ScriptedModel([fix] * 200, price=0.001)
    config = replace(CONFIG, operators=OperatorSet.MIXED, synthesis=True, generations=2, mutation_rate=1.0,
                     crossover_rate=0.0)
    controller = Controller(config, Evaluator(runner, suite, suite.training), model=model)
    _, reports = await evolve(controller, example_code("dispatcher"), config)
    assert model.calls, "the model was asked"
    assert sum(report.cost_usd for report in reports) > 0
    synthesised = sum(stat.uses for stat in reports[0].operator_stats if stat.operator.startswith("synth:"))
    assert synthesised > 0
    assert all(report.operator_stats for report in reports)
