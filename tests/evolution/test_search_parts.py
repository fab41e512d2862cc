"""Selection, islands, archive, sampler and budgets as pure functions with a seeded random.Random."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from evolution_svc.archive import Archive, descriptor, insert, sample
from evolution_svc.budgets import stop_decision
from evolution_svc.domain import Candidate, EvolutionConfig, OperatorSet, StopReason
from evolution_svc.fitness import FitnessBasis
from evolution_svc.islands import is_migration_generation, island_sizes, migrate
from evolution_svc.population import Totals, initial_state
from evolution_svc.sampler import LLM_DIFF, plan_child
from evolution_svc.selection import elites, ranked, tournament

pytestmark = pytest.mark.unit  # no I/O


def cand(name: str, fitness: float, *, size: int = 10, correctness: float | None = None, ast: str = "") -> Candidate:
    return Candidate(
        code=f"# {name}",
        code_hash=name,
        ast_hash=ast or name,
        size=size,
        generation=0,
        operator="seed",
        parent_hashes=(),
        fitness=fitness,
        correctness=fitness if correctness is None else correctness,
        mean_duration_ms=0.0,
    )


POP = (cand("a", 0.2), cand("b", 0.9), cand("c", 0.5), cand("d", 0.9, size=5), cand("e", 0.1))


def test_ranking_prefers_fitness_then_smaller_code_then_hash() -> None:
    assert [c.code_hash for c in ranked(POP)] == ["d", "b", "c", "a", "e"]


def test_tournament_is_reproducible_for_a_seed() -> None:
    picks = [tournament(POP, 3, random.Random(11)).code_hash for _ in range(3)]
    assert picks == [tournament(POP, 3, random.Random(11)).code_hash] * 3
    winners = {tournament(POP, 2, random.Random(seed)).code_hash for seed in range(50)}
    assert "e" not in winners or len(winners) > 1


def test_elites_are_distinct_programs() -> None:
    population = (*POP, cand("d2", 0.9, size=5, ast="d"))
    assert [c.code_hash for c in elites(population, 3)] == ["d", "b", "c"]


def test_islands_split_evenly_and_migrate_in_a_ring() -> None:
    assert island_sizes(50, 3) == (17, 17, 16)
    assert is_migration_generation(10, 5, 2) and not is_migration_generation(10, 5, 1)
    assert not is_migration_generation(7, 5, 2) and not is_migration_generation(5, 0, 2)
    first = (cand("a", 0.9), cand("b", 0.1), cand("c", 0.2))
    second = (cand("x", 0.5), cand("y", 0.4), cand("z", 0.3))
    moved = migrate((first, second), 1)
    assert [c.code_hash for c in moved[0]] == ["a", "c", "x"]
    assert [c.code_hash for c in moved[1]] == ["x", "y", "a"]


def test_archive_keeps_the_best_of_each_behaviour_cell() -> None:
    archive = Archive()
    archive = insert(archive, cand("a", 0.55, size=10), 10)
    archive = insert(archive, cand("b", 0.58, size=10), 10)
    archive = insert(archive, cand("c", 0.95, size=40), 10)
    archive = insert(archive, cand("z", 0.0), 10)
    assert descriptor(cand("c", 0.95, size=40), 10) == (9, 7)
    assert [(cell, c.code_hash) for cell, c in archive.cells] == [((5, 4), "b"), ((9, 7), "c")]
    assert sample(archive, random.Random(0)) is not None
    assert sample(Archive(), random.Random(0)) is None


def test_sampler_never_plans_a_plain_copy_and_respects_the_cost_budget() -> None:
    config = EvolutionConfig(mutation_rate=0.0, crossover_rate=0.0 + 1e-12)
    rng = random.Random(0)
    assert all(
        plan_child(0, POP, Archive(), config, rng, archive_rate=0.0, llm_allowed=True) is None for _ in range(100)
    )
    llm_only = EvolutionConfig(mutation_rate=1.0, crossover_rate=0.0, operators=OperatorSet.LLM)
    assert plan_child(0, POP, Archive(), llm_only, random.Random(1), archive_rate=0.0, llm_allowed=False) is None
    plan = plan_child(0, POP, Archive(), llm_only, random.Random(1), archive_rate=0.0, llm_allowed=True)
    assert plan is not None and plan.steps == (LLM_DIFF,) and plan.uses_llm


BASIS = FitnessBasis((1.0,), 10, 0.0, 0.01, 0.01)


def test_stop_decision_names_each_budget() -> None:
    config = EvolutionConfig(
        generations=10,
        max_evaluations=100,
        max_cost_usd=0.5,
        max_duration_seconds=60,
        plateau_generations=3,
        operators=OperatorSet.MIXED,
    )
    state = initial_state(cand("s", 0.4), config, BASIS, Totals(evaluations=1))
    assert stop_decision(state, config) is None
    cases = [
        (replace(state, generation=10), StopReason.GENERATIONS, "10 generations finished"),
        (
            replace(state, totals=Totals(evaluations=100)),
            StopReason.EVALUATION_BUDGET,
            "evaluation budget used up: 100 of 100",
        ),
        (
            replace(state, totals=Totals(cost_usd=0.5)),
            StopReason.COST_BUDGET,
            "LLM cost budget used up: $0.5000 of $0.5000",
        ),
        (
            replace(state, totals=Totals(elapsed_seconds=61.0)),
            StopReason.TIME_BUDGET,
            "wall-time budget used up: 61.0 s of 60 s",
        ),
        (replace(state, stagnant=3), StopReason.PLATEAU, "no improvement for 3 generations"),
    ]
    for changed, reason, message in cases:
        stop = stop_decision(changed, config)
        assert stop is not None and (stop.reason, stop.message) == (reason, message)
    perfect = replace(state, best=cand("p", 1.0))
    weightless = replace(config, speed_weight=0.0, size_weight=0.0)
    stop = stop_decision(perfect, weightless)
    assert stop is not None and stop.reason is StopReason.PERFECT
    assert stop_decision(perfect, config) is None
