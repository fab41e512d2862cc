"""Program transforms: each operator's exact edit for a seed, what is never edited, and crossover."""

from __future__ import annotations

import ast
import random

import pytest

from evolution_svc import programs, transforms

pytestmark = pytest.mark.unit  # no I/O

CODE = '''class Tiny:
    """Docstring stays."""

    def get_capabilities(self):
        return {"limit": 10}

    def execute(self, inputs):
        x = inputs["x"]
        y = x + 3
        if y < 10:
            y = y * 2
        return {"y": y}
'''


def body(code: str | None) -> list[str]:
    assert code is not None
    return [line.strip() for line in code.split("def execute(self, inputs):\n")[1].splitlines()]


@pytest.mark.parametrize(
    ("operator", "seed", "expected"),
    [
        (transforms.MUTATE_CONSTANT, 0, ["x = inputs['x']", "y = x + 3", "if y < 11:", "y = y * 2", "return {'y': y}"]),
        (
            transforms.MUTATE_OPERATOR,
            0,
            ["x = inputs['x']", "y = x // 3", "if y < 10:", "y = y * 2", "return {'y': y}"],
        ),
        (
            transforms.MUTATE_COMPARISON,
            1,
            ["x = inputs['x']", "y = x + 3", "if y >= 10:", "y = y * 2", "return {'y': y}"],
        ),
        (
            transforms.MUTATE_INSERT,
            2,
            ["x = inputs['x']", "x = inputs['x']", "y = x + 3", "if y < 10:", "y = y * 2", "return {'y': y}"],
        ),
        (transforms.MUTATE_DELETE, 0, ["x = inputs['x']", "y = x + 3", "if y < 10:", "pass", "return {'y': y}"]),
        (transforms.MUTATE_SWAP, 2, ["y = x + 3", "x = inputs['x']", "if y < 10:", "y = y * 2", "return {'y': y}"]),
    ],
)
def test_mutation_makes_its_exact_edit_for_a_seed(operator: str, seed: int, expected: list[str]) -> None:
    assert body(transforms.mutate(CODE, operator, random.Random(seed))) == expected


@pytest.mark.parametrize("operator", transforms.MUTATION_OPERATORS)
def test_mutation_never_touches_capabilities_docstrings_or_keys(operator: str) -> None:
    rng = random.Random(7)
    for _ in range(200):
        child = transforms.mutate(CODE, operator, rng, [CODE])
        if child is None:
            continue
        assert "return {'limit': 10}" in child
        assert '"""Docstring stays."""' in child
        if operator == transforms.MUTATE_CONSTANT:
            assert "inputs['x']" in child and "{'y': y}" in child
        programs.load(child)


def test_mutation_is_reproducible_with_the_same_seed() -> None:
    first = [transforms.mutate(CODE, op, random.Random(3), [CODE]) for op in transforms.MUTATION_OPERATORS]
    second = [transforms.mutate(CODE, op, random.Random(3), [CODE]) for op in transforms.MUTATION_OPERATORS]
    assert first == second


def test_insertion_draws_statements_from_donors() -> None:
    donor = CODE.replace("y = x + 3", "y = x + 3\n        y = y - 100")
    children = {transforms.mutate(CODE, transforms.MUTATE_INSERT, random.Random(seed), [donor]) for seed in range(40)}
    assert any(child and "y = y - 100" in child for child in children)


def test_constant_perturbation_borrows_values_from_the_population() -> None:
    donor = CODE.replace("x + 3", "x + 41")
    children = {transforms.mutate(CODE, transforms.MUTATE_CONSTANT, random.Random(seed), [donor]) for seed in range(60)}
    assert any(child and "41" in child for child in children)


def test_crossover_moves_fixes_from_the_same_places_of_both_parents() -> None:
    first = CODE.replace("x + 3", "x + 4")
    second = CODE.replace("y < 10", "y <= 10")
    children = {transforms.crossover(first, second, random.Random(seed)) for seed in range(20)}
    both = CODE.replace("x + 3", "x + 4").replace("y < 10", "y <= 10")
    made = {programs.ast_hash(child) for child in children if child}
    assert programs.ast_hash(both) in made
    assert made <= {programs.ast_hash(both), programs.ast_hash(second), programs.ast_hash(CODE)}


def test_crossover_of_identical_parents_has_nothing_to_exchange() -> None:
    assert transforms.crossover(CODE, CODE.replace("    ", "    "), random.Random(1)) is None


def test_operators_return_none_when_there_is_no_site() -> None:
    bare = "class Bare:\n    def execute(self, inputs):\n        return inputs\n"
    assert transforms.mutate(bare, transforms.MUTATE_CONSTANT, random.Random(0)) is None
    assert transforms.mutate(bare, transforms.MUTATE_COMPARISON, random.Random(0)) is None
    assert transforms.mutate(bare, transforms.MUTATE_SWAP, random.Random(0)) is None


def test_normalised_ast_ignores_formatting_comments_and_docstrings() -> None:
    reformatted = CODE.replace('"""Docstring stays."""', '"""Another text."""').replace(
        "y = x + 3", "y = (x +   3)  # a comment"
    )
    assert programs.ast_hash(reformatted) == programs.ast_hash(CODE)
    assert programs.ast_hash(CODE.replace("x + 3", "x + 4")) != programs.ast_hash(CODE)


def test_a_loaded_program_keeps_its_docstrings_and_hashes_like_its_source() -> None:
    # load() hashes the tree it keeps: the docstrings it strips for the hash must be back afterwards.
    code = '"""Module."""\n' + CODE + "\n\ndef helper():\n    \"\"\"Only a docstring.\"\"\"\n"
    program = programs.load(code)
    assert ast.dump(program.tree) == ast.dump(ast.parse(code))
    assert program.ast_hash == programs.ast_hash(code)
    assert program.size == sum(1 for _ in ast.walk(ast.parse(code)))
    # Code that parses but is no agent still has a normalised hash (the duplicate check needs one).
    assert programs.ast_hash('"""Doc."""\nx = 1\n') == programs.ast_hash("x = 1  # same\n")


def test_load_rejects_programs_without_one_agent_class() -> None:
    with pytest.raises(programs.InvalidProgram, match="no class with an execute method"):
        programs.load("x = 1\n")
    with pytest.raises(programs.InvalidProgram, match="SyntaxError"):
        programs.load("class A:\n    def execute(self, inputs)\n")
