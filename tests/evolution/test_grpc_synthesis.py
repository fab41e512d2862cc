"""Real gRPC with the real registry and sandbox: synthesis operators repair weak seeds with no model (a call
to insert, a term to add, a guard to write), lexicase and tournament are both selectable and reported, and
runs are reproducible by seed."""

from __future__ import annotations

from typing import Any

import pytest
from tdev.evolution.v1 import evolution_pb2

from tests.evolution.conftest import Mesh, example_code, example_suite_json, suite_message

pytestmark = pytest.mark.mesh  # real servers or subprocesses

RUN = evolution_pb2.EvolutionRun

CITY = '''"""Formats a city name (weak: returns it as given)."""


class City:
    def get_capabilities(self):
        return {"name": "city"}

    def execute(self, inputs):
        name = inputs["name"]
        return {"city": name}
'''
DISTANCE = '''"""Squared distance of a point from the origin (weak: forgets the second coordinate)."""


class Distance:
    def get_capabilities(self):
        return {"name": "distance"}

    def execute(self, inputs):
        x = inputs["x"]
        y = inputs["y"]
        return {"d2": x * x}
'''
AVERAGE = '''"""Mean of a list of values (weak: fails on an empty list)."""


class Average:
    def get_capabilities(self):
        return {"name": "average"}

    def execute(self, inputs):
        values = inputs["values"]
        return {"mean": sum(values) / len(values)}
'''


def _suite(cases: list[tuple[dict[str, Any], dict[str, Any]]], held_out: int) -> dict[str, Any]:
    return {
        "scoring_mode": "exact",
        "cases": [
            {"name": f"c{index}", "inputs": inputs, "expected": expected, "held_out": index >= len(cases) - held_out}
            for index, (inputs, expected) in enumerate(cases)
        ],
    }


CITY_SUITE = _suite(
    [({"name": name}, {"city": name.title()}) for name in
     ["paris", "new york", "SAN jose", "oslo", "rio de janeiro", "Cape town", "tokyo", "LIMA", "bern", "st louis"]],
    held_out=3,
)
DISTANCE_SUITE = _suite(
    [({"x": x, "y": y}, {"d2": x * x + y * y}) for x, y in
     [(3, 4), (1, 2), (0, 5), (-2, 3), (6, -1), (2, 2), (7, 0), (-3, -3), (4, 5), (1, -6)]],
    held_out=3,
)
AVERAGE_SUITE = _suite(
    [({"values": values}, {"mean": sum(values) / len(values) if values else 0}) for values in
     [[1, 2, 3], [], [4], [2, 8], [], [5, 5, 5, 1], [10, 0], [], [3, 6, 9], [7]]],
    held_out=3,
)
SEARCH = {
    "population_size": 20,
    "generations": 25,
    "mutation_rate": 0.9,
    "crossover_rate": 0.3,
    "plateau_generations": 0,
    "speed_weight": 0.0,
    "size_weight": 0.0,
    "synthesis": True,
}


async def _repair(mesh: Mesh, name: str, code: str, suite: dict[str, Any], seed: int) -> evolution_pb2.EvolutionRun:
    await mesh.register(name, code)
    run = await mesh.start(name, suite_message(suite), seed=seed, selection=evolution_pb2.SELECTION_LEXICASE,
                           **SEARCH)
    await mesh.events(run.run_id)
    return await mesh.get(run.run_id)


def _assert_repaired(final: evolution_pb2.EvolutionRun) -> None:
    assert final.state == RUN.STATE_SUCCEEDED
    assert final.seed_fitness < 0.75
    assert (final.stop_reason, final.best.correctness) == (evolution_pb2.STOP_REASON_PERFECT, 1.0)
    assert final.promotion.promoted
    assert final.promotion.best_held_out_fitness == 1.0
    assert final.promotion.baseline_held_out_fitness < 1.0
    assert all(report.selection == "lexicase" for report in final.generations)


async def test_synthesis_inserts_a_missing_call_from_a_weak_seed(mesh: Mesh) -> None:
    final = await _repair(mesh, "city", CITY, CITY_SUITE, seed=1)
    _assert_repaired(final)
    assert ".title()" in final.best.code


async def test_synthesis_adds_a_missing_term_from_a_weak_seed(mesh: Mesh) -> None:
    final = await _repair(mesh, "distance", DISTANCE, DISTANCE_SUITE, seed=1)
    _assert_repaired(final)
    assert "y" in final.best.code.split("return")[-1] or "y *" in final.best.code


async def test_synthesis_writes_a_guard_from_a_weak_seed(mesh: Mesh) -> None:
    final = await _repair(mesh, "average", AVERAGE, AVERAGE_SUITE, seed=3)
    _assert_repaired(final)
    assert "if not " in final.best.code


async def test_operator_weights_are_reported_per_generation(mesh: Mesh) -> None:
    final = await _repair(mesh, "distance", DISTANCE, DISTANCE_SUITE, seed=2)
    for report in final.generations:
        names = [stat.operator for stat in report.operator_stats]
        assert "synth:guard" in names and "mutate:constant" in names
        assert sum(stat.weight for stat in report.operator_stats) == pytest.approx(1.0, abs=1e-4)
        assert all(0 <= stat.successes <= stat.uses for stat in report.operator_stats)
    assert sum(stat.uses for stat in final.generations[0].operator_stats) > 0


@pytest.mark.parametrize(
    ("selection", "name"),
    [
        (evolution_pb2.SELECTION_TOURNAMENT, "tournament"),
        (evolution_pb2.SELECTION_LEXICASE, "lexicase"),
        (evolution_pb2.SELECTION_EPSILON_LEXICASE, "epsilon_lexicase"),
        (evolution_pb2.SELECTION_UNSPECIFIED, "tournament"),
    ],
)
async def test_selection_is_configurable_and_reported(mesh: Mesh, selection: int, name: str) -> None:
    await mesh.register("distance", DISTANCE)
    run = await mesh.start("distance", suite_message(DISTANCE_SUITE), seed=4, selection=selection,
                           **{**SEARCH, "generations": 3})
    assert run.config.selection == (selection or evolution_pb2.SELECTION_TOURNAMENT)
    assert run.config.synthesis is True
    await mesh.events(run.run_id)
    final = await mesh.get(run.run_id)
    assert final.state == RUN.STATE_SUCCEEDED
    assert [report.selection for report in final.generations] == [name] * len(final.generations)


async def test_synthesis_run_is_reproducible_by_seed(mesh: Mesh) -> None:
    await mesh.register("distance", DISTANCE)
    finals = []
    for _ in range(2):
        run = await mesh.start("distance", suite_message(DISTANCE_SUITE), seed=9,
                               selection=evolution_pb2.SELECTION_LEXICASE, **{**SEARCH, "generations": 4})
        await mesh.events(run.run_id)
        finals.append(await mesh.get(run.run_id))
    first, second = finals
    assert [g.best_fitness for g in first.generations] == [g.best_fitness for g in second.generations]
    assert [g.best_code_hash for g in first.generations] == [g.best_code_hash for g in second.generations]
    assert [list(g.operator_stats) for g in first.generations] == [list(g.operator_stats) for g in second.generations]
    assert first.best.code == second.best.code


async def test_example_task_still_improves_with_synthesis_and_lexicase(mesh: Mesh) -> None:
    await mesh.register("slugify", example_code("slugify"))
    run = await mesh.start("slugify", suite_message(example_suite_json("slugify")), seed=3,
                           selection=evolution_pb2.SELECTION_LEXICASE, **{**SEARCH, "generations": 6})
    await mesh.events(run.run_id)
    final = await mesh.get(run.run_id)
    assert final.state == RUN.STATE_SUCCEEDED
    assert final.best.fitness > final.seed_fitness
