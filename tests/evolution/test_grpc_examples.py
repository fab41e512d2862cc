"""Real gRPC with the real registry and sandbox: the example tasks improve with program transforms alone,
and the winner is promoted as a new version with its lineage and the run's report."""

from __future__ import annotations

import pytest
from tdev.evolution.v1 import evolution_pb2
from tdev.registry.v1 import registry_service_pb2 as registry_pb2

from tests.evolution.conftest import TASKS, Mesh, example_code, example_suite_json, suite_message

pytestmark = pytest.mark.mesh  # real servers or subprocesses

E = evolution_pb2.EvolutionEvent
RUN = evolution_pb2.EvolutionRun

# Seed 3, population 20, 6 generations, program transforms only, speed weight 0 (bit-for-bit reproducible).
EXPECTED = {
    "shipping_cost": (
        0.240714286,
        [0.240922619, 0.287857143, 0.287857143, 0.287857143, 0.476388889, 0.476388889],
        (0.2525, 0.499960317, 8),
    ),
    "slugify": (
        0.382142857,
        [0.570898109, 0.570898109, 0.712142857, 0.712142857, 0.712142857, 0.712142857],
        (0.335, 0.665, 6),
    ),
    "dispatcher": (
        0.296176471,
        [0.470882353, 0.587263973, 0.820294118, 0.820294118, 0.820294118, 0.820294118],
        (0.203, 0.797, 5),
    ),
}


@pytest.mark.parametrize("task", TASKS)
async def test_example_task_improves_with_program_transforms_alone_and_is_promoted(mesh: Mesh, task: str) -> None:
    original = (await mesh.register(task, example_code(task))).agent
    run = await mesh.start(
        task,
        suite_message(example_suite_json(task)),
        population_size=20,
        generations=6,
        seed=3,
        plateau_generations=0,
        speed_weight=0.0,
    )
    assert (run.state, run.agent_id, run.agent_version) == (RUN.STATE_PENDING, original.agent_id, "1.0.0")
    events = await mesh.events(run.run_id)
    assert [e.sequence for e in events] == list(range(1, 10))
    assert [E.Type.Name(e.type) for e in events] == [
        "TYPE_RUN_STARTED",
        *["TYPE_GENERATION_COMPLETED"] * 6,
        "TYPE_PROMOTION_DECIDED",
        "TYPE_RUN_SUCCEEDED",
    ]
    seed_fitness, bests, (baseline, held_out_best, held_out_cases) = EXPECTED[task]
    final = await mesh.get(run.run_id)
    assert final.seed_fitness == seed_fitness
    assert [g.best_fitness for g in final.generations] == bests
    assert [g.generation for g in final.generations] == [1, 2, 3, 4, 5, 6]
    assert final.generations[-1].improvement_over_seed == round((bests[-1] - seed_fitness) / seed_fitness, 9)
    assert final.generations[0].improvement_over_previous == round((bests[0] - seed_fitness) / seed_fitness, 9)
    assert all(g.evaluations > 0 and 0 < g.diversity <= 1 and g.archive_size >= 1 for g in final.generations)
    assert final.generations[-1].total_evaluations == 1 + sum(g.evaluations for g in final.generations)
    assert (final.state, final.stop_reason, final.stop_message) == (
        RUN.STATE_SUCCEEDED,
        evolution_pb2.STOP_REASON_GENERATIONS,
        "6 generations finished",
    )
    assert final.best.fitness == bests[-1] and final.best.correctness > 0
    promotion = final.promotion
    assert (promotion.promoted, promotion.baseline_held_out_fitness, promotion.best_held_out_fitness) == (
        True,
        baseline,
        held_out_best,
    )
    assert promotion.reason.startswith(f"the best candidate beats the original on {held_out_cases} held-out cases")
    assert (promotion.agent_id, promotion.version) == (original.agent_id, "1.1.0")
    promoted = (
        await mesh.registry.GetAgent(registry_pb2.GetAgentRequest(agent_id=original.agent_id, version="1.1.0"))
    ).agent
    assert promoted.code == final.best.code
    assert [(p.agent_id, p.version) for p in promoted.parents] == [(original.agent_id, "1.0.0")]
    assert promoted.labels["origin"] == "evolution"
    assert promoted.labels["evolution_run_id"] == run.run_id
    assert promoted.labels["evolution_report"].startswith(f"generation 6: best {bests[-1]:.4f}")
    assert events[7].promotion == promotion
