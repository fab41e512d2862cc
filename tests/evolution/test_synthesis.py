"""Synthesis operators, dataflow guidance, the operator bandit, lexicase selection, pass-vector archive cells
and the repair benchmark generator, as pure functions."""

from __future__ import annotations

import ast
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from evolution_svc import bandit, synthesis
from evolution_svc.archive import Archive, insert, pass_vector_descriptor
from evolution_svc.domain import Candidate, EvaluationCase, EvolutionConfig, Selection
from evolution_svc.programs import load
from evolution_svc.scoring import closeness
from evolution_svc.selection import lexicase, select

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

CODE = '''class A:
    def get_capabilities(self):
        return {"name": "a"}

    def execute(self, inputs):
        a = inputs["a"]
        b = inputs["b"]
        name = inputs["name"]
        items = inputs["items"]
        total = a * a + b
        label = name
        return {"total": total, "label": label}
'''
CASES = (
    EvaluationCase("c0", {"a": 2, "b": 3, "name": "bob", "items": [3, 1]},
                   {"total": 10, "label": "Bob", "count": 2}),
)
FACTS = synthesis.facts_from_cases(CASES)


def _candidate(name: str, scores: tuple[float, ...], closeness_: tuple[float, ...] = ()) -> Candidate:
    passed = sum(scores) / len(scores)
    return Candidate(code=name, code_hash=name, ast_hash=name, size=10, generation=0, operator="seed",
                     parent_hashes=(), fitness=passed, correctness=passed, mean_duration_ms=0.1,
                     case_scores=scores, case_closeness=closeness_)


def test_facts_type_inputs_and_outputs_and_keep_input_numbers_only() -> None:
    assert dict(FACTS.input_kinds) == {"a": "int", "b": "int", "name": "str", "items": "list[int]"}
    assert dict(FACTS.expected_kinds) == {"total": "int", "label": "str", "count": "int"}
    assert 10 not in FACTS.literals and "Bob" in FACTS.literals and 3 in FACTS.literals


@pytest.mark.parametrize("operator", synthesis.SYNTHESIS_OPERATORS)
def test_every_synthesis_operator_makes_loadable_new_programs(operator: str) -> None:
    rng = random.Random(5)
    code = CODE.replace("a * a + b", "max(a * a, b) - b")  # something to reorder
    made = {synthesis.mutate(code, operator, rng, FACTS, ("total",)) for _ in range(60)} - {None}
    assert len(made) >= 2
    for code in made:
        assert code is not None
        load(code)
        assert 'return {"name": "a"}' in code.replace("'", '"')  # get_capabilities untouched


def test_wrap_inserts_calls_that_were_not_in_the_program() -> None:
    rng = random.Random(1)
    made = [synthesis.mutate(CODE, synthesis.SYNTH_WRAP, rng, FACTS, ("label",)) or "" for _ in range(80)]
    assert any(".title()" in code for code in made)
    assert any(call in code for code in made for call in ("min(", "max(", "abs(", "round("))


def test_guard_inserts_an_if_statement() -> None:
    rng = random.Random(2)
    made = [synthesis.mutate(CODE, synthesis.SYNTH_GUARD, rng, FACTS) or "" for _ in range(30)]
    guarded = [code for code in made if code]
    assert guarded and all(sum(isinstance(n, ast.If) for n in ast.walk(ast.parse(code))) == 1 for code in guarded)


def test_return_shape_adds_the_missing_expected_key() -> None:
    code = synthesis.mutate(CODE, synthesis.SYNTH_RETURN_SHAPE, random.Random(0), FACTS)
    assert code is not None
    returned = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Return)][-1].value
    assert isinstance(returned, ast.Dict)
    assert [k.value for k in returned.keys if isinstance(k, ast.Constant)] == ["total", "label", "count"]


def test_comprehension_maps_over_a_list() -> None:
    rng = random.Random(3)
    made = [synthesis.mutate(CODE.replace('"label": label', '"label": items'), synthesis.SYNTH_COMPREHENSION,
                             rng, FACTS) or "" for _ in range(40)]
    assert any("for item in " in code for code in made)


def test_dataflow_slice_follows_wrong_keys_back_through_assignments() -> None:
    function = next(n for n in ast.walk(ast.parse(CODE)) if isinstance(n, ast.FunctionDef) and n.name == "execute")
    wanted = synthesis.dataflow_slice(function, ["total"])
    assigned = {
        stmt.targets[0].id: id(stmt.value)  # type: ignore[attr-defined]
        for stmt in function.body
        if isinstance(stmt, ast.Assign)
    }
    assert {assigned["total"], assigned["a"], assigned["b"]} <= wanted
    assert assigned["name"] not in wanted and assigned["label"] not in wanted


def test_bandit_moves_weight_to_the_operator_that_succeeds() -> None:
    stats = bandit.initial(("x", "y", "z"))
    assert [s.weight for s in stats] == pytest.approx([1 / 3] * 3, abs=1e-5)
    for _ in range(3):
        stats = bandit.update(stats, [("x", True)] * 5 + [("y", False)] * 5)
    weights = {s.operator: s.weight for s in stats}
    assert weights["x"] > weights["z"] > weights["y"] > 0
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    draws = [bandit.draw(stats, random.Random(seed)) for seed in range(300)]
    assert draws.count("x") > draws.count("y")


def test_lexicase_keeps_a_specialist_that_tournament_would_lose() -> None:
    generalist = _candidate("g", (1.0, 1.0, 1.0, 0.0))
    specialist = _candidate("s", (0.0, 0.0, 0.0, 1.0))
    picks = {lexicase([generalist, generalist, specialist], random.Random(seed)).code for seed in range(40)}
    assert picks == {"g", "s"}


def test_lexicase_prefers_the_nearer_miss_by_closeness() -> None:
    far = _candidate("far", (0.0, 0.0), (0.1, 0.1))
    near = _candidate("near", (0.0, 0.0), (0.9, 0.8))
    assert {lexicase([far, near], random.Random(seed), epsilon=True).code for seed in range(20)} == {"near"}
    assert {lexicase([far, near], random.Random(seed)).code for seed in range(20)} == {"far", "near"}


def test_epsilon_lexicase_tolerates_small_differences() -> None:
    a = _candidate("a", (0.0, 0.0), (0.90, 0.5))
    b = _candidate("b", (0.0, 0.0), (0.89, 0.9))
    c = _candidate("c", (0.0, 0.0), (0.10, 0.1))
    picks = {lexicase([a, b, c], random.Random(seed), epsilon=True).code for seed in range(40)}
    assert "c" not in picks and "b" in picks


def test_select_follows_the_configured_method() -> None:
    population = [_candidate("g", (1.0, 1.0, 0.0)), _candidate("s", (0.0, 0.0, 1.0))]
    config = EvolutionConfig(tournament_size=30)
    assert {select(population, config, random.Random(seed)).code for seed in range(20)} == {"g"}
    lexi = replace(config, selection=Selection.LEXICASE)
    assert {select(population, lexi, random.Random(seed)).code for seed in range(40)} == {"g", "s"}


def test_pass_vector_cells_separate_programs_passing_different_cases() -> None:
    first = _candidate("p", (1.0, 0.0))
    second = _candidate("q", (0.0, 1.0))
    assert pass_vector_descriptor(first, 10) != pass_vector_descriptor(second, 10)
    archive = insert(insert(Archive(), first, 10, by_cases=True), second, 10, by_cases=True)
    assert len(archive) == 2
    assert len(insert(insert(Archive(), first, 10), second, 10)) == 1  # same correctness decile and size


def test_closeness_ranks_near_misses_below_a_pass() -> None:
    assert closeness(1.0, {"x": 1}, {"x": 1}) == 1.0
    assert closeness(0.0, {"x": 9}, {"x": 10}) > closeness(0.0, {"x": 1}, {"x": 10}) > 0
    assert closeness(0.0, {"s": "Bob"}, {"s": "bob"}) < 1.0
    assert closeness(0.0, "oops", {"x": 1}) == 0.0


def test_repair_benchmark_bugs_break_training_cases_and_suites_hold_cases_out() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from repair_benchmark.bugs import BUG_KINDS
    from repair_benchmark.generate import generate
    from repair_benchmark.references import REFERENCES

    assert len(REFERENCES) >= 20
    tasks = generate(7)
    assert {task.kind for task in tasks} == set(BUG_KINDS)
    for task in tasks:
        assert task.broken_training >= 1
        held = [case for case in task.cases if case["held_out"]]
        assert 1 <= len(held) <= 8 and len(task.cases) - len(held) >= 2 * len(held)
        assert task.code != task.reference_code
    assert [t.code for t in generate(7)] == [t.code for t in tasks]


def test_checkpoint_keeps_bandit_stats_case_vectors_and_pass_vector_cells() -> None:
    from evolution_svc.codec import decode_state, encode_state
    from evolution_svc.fitness import FitnessBasis
    from evolution_svc.population import Totals, initial_state

    seed = replace(_candidate("s", (1.0, 0.0, 1.0), (1.0, 0.5, 1.0)), wrong_keys=("total",))
    config = EvolutionConfig(selection=Selection.LEXICASE, synthesis=True, seed=4)
    state = initial_state(seed, config, FitnessBasis((1.0, 1.0, 1.0), 10, 0.1, 0.0, 0.0), Totals())
    state = replace(state, operator_stats=bandit.update(state.operator_stats, [("synth:guard", True)]))
    restored = decode_state(encode_state(state))
    assert restored == state
    assert restored.archive.cells[0][0] == pass_vector_descriptor(seed, 10)
    assert {s.operator for s in restored.operator_stats} >= set(synthesis.SYNTHESIS_OPERATORS)
