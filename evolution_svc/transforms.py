"""Program-transform operators on the AST that need no model: mutations and subtree crossover.

Every operator takes source code and a seeded ``random.Random`` and returns new source, or None when it
found nothing to change or produced a program that does not load. Only the parts that can change a score
are edited: never ``get_capabilities``, imports or docstrings.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from evolution_svc.programs import FROZEN_FUNCTIONS, InvalidProgram, load, render

MUTATE_CONSTANT = "mutate:constant"
MUTATE_OPERATOR = "mutate:operator"
MUTATE_COMPARISON = "mutate:comparison"
MUTATE_INSERT = "mutate:insert"
MUTATE_DELETE = "mutate:delete"
MUTATE_SWAP = "mutate:swap"
CROSSOVER_SUBTREE = "crossover:subtree"

# Arithmetic a swap may produce; ** and shifts are left out because they blow up time and memory.
ARITHMETIC: tuple[type[ast.operator], ...] = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
COMPARISON_GROUPS: tuple[tuple[type[ast.cmpop], ...], ...] = (
    (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq),
    (ast.In, ast.NotIn),
    (ast.Is, ast.IsNot),
)
# Callables that are each other's "opposite operator": a swap among them is an operator swap.
CALLEE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("min", "max"),
    ("any", "all"),
    ("lower", "upper"),
    ("strip", "lstrip", "rstrip"),
    ("floor", "ceil"),
)


@dataclass(slots=True, eq=False)
class _Slot:
    """Where a node sits: ``parent.field`` or ``parent.field[index]`` (not frozen: a frozen dataclass's
    ``__init__`` costs a ``object.__setattr__`` per field, and operators make thousands of these)."""

    parent: ast.AST
    field: str
    index: int | None
    node: ast.AST

    def put(self, new: ast.AST) -> None:
        if self.index is None:
            setattr(self.parent, self.field, new)
        else:
            getattr(self.parent, self.field)[self.index] = new


def _is_docstring(node: ast.AST, parent: ast.AST, index: int | None) -> bool:
    return (
        index == 0
        and isinstance(parent, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_frozen(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in FROZEN_FUNCTIONS


_MISSING = object()
_IMPORTS = (ast.Import, ast.ImportFrom)


def _slots(tree: ast.AST) -> Iterator[_Slot]:
    """Every editable node with its position, parents before children."""
    stack: list[ast.AST] = [tree]
    while stack:
        parent = stack.pop()
        for field in parent._fields:  # what ast.iter_fields walks, without its generator
            value = getattr(parent, field, _MISSING)
            items = list(enumerate(value)) if isinstance(value, list) else ((None, value),)
            for index, child in items:
                if not isinstance(child, ast.AST) or _is_frozen(child):
                    continue
                if isinstance(child, _IMPORTS) or _is_docstring(child, parent, index):
                    continue
                yield _Slot(parent, field, index, child)
                stack.append(child)


def _blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    """Statement lists inside functions (not module or class bodies), without leading docstrings."""
    blocks: list[list[ast.stmt]] = []
    for slot in _slots(tree):
        node = slot.node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            blocks.append(node.body)
        for field in ("body", "orelse", "finalbody"):
            if isinstance(node, ast.If | ast.For | ast.AsyncFor | ast.While | ast.With | ast.Try):
                value = getattr(node, field, None)
                if isinstance(value, list) and value:
                    blocks.append(value)
        if isinstance(node, ast.ExceptHandler):
            blocks.append(node.body)
    return blocks


def _first_editable(block: list[ast.stmt]) -> int:
    """Index of the first statement that is not a docstring."""
    head = block[0] if block else None
    if isinstance(head, ast.Expr) and isinstance(head.value, ast.Constant) and isinstance(head.value.value, str):
        return 1
    return 0


def _constants(trees: Sequence[ast.AST]) -> list[object]:
    values: list[object] = []
    for tree in trees:
        for slot in _slots(tree):
            if isinstance(slot.node, ast.Constant) and slot.node.value is not None:
                values.append(slot.node.value)
    return values


def _perturb(value: object, rng: random.Random, pool: Sequence[object]) -> object | None:
    """A nearby or borrowed value of the same kind; None when there is nothing sensible."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        others = sorted({v for v in pool if type(v) is int and v != value})
        choice = rng.random()
        if choice < 0.25 and others:
            return rng.choice(others)
        if choice < 0.65:
            return value + rng.choice((-1, 1))
        if choice < 0.8:
            return value + rng.choice((-1, 1)) * max(1, round(abs(value) * rng.uniform(0.05, 0.5)))
        if choice < 0.9:
            return value * 2 if rng.random() < 0.5 else value // 2
        return -value
    if isinstance(value, float):
        numbers = sorted({float(v) for v in pool if isinstance(v, int | float) and not isinstance(v, bool)} - {value})
        choice = rng.random()
        if choice < 0.25 and numbers:
            return rng.choice(numbers)
        if choice < 0.6:
            return round(value * (1 + rng.gauss(0, 0.1)) if value else rng.gauss(0, 1), 4)
        if choice < 0.8:
            return value + rng.choice((-1.0, 1.0))
        if choice < 0.9:
            return value * 2 if rng.random() < 0.5 else value / 2
        return -value
    if isinstance(value, str):
        texts = sorted({v for v in pool if isinstance(v, str) and v != value})
        return rng.choice(texts) if texts else None
    return None


def _is_key(slot: _Slot) -> bool:
    """A string naming a key (``inputs["weight"]``, ``{"cost": ...}``): renaming it only ever breaks."""
    if not isinstance(slot.node, ast.Constant) or not isinstance(slot.node.value, str):
        return False
    return (isinstance(slot.parent, ast.Subscript) and slot.field == "slice") or (
        isinstance(slot.parent, ast.Dict) and slot.field == "keys"
    )


def _mutate_constant(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    sites = [
        slot.node
        for slot in _slots(tree)
        if isinstance(slot.node, ast.Constant)
        and slot.node.value is not None
        and slot.node.value is not ...
        and not _is_key(slot)
    ]
    if not sites:
        return False
    site = rng.choice(sites)
    assert isinstance(site, ast.Constant)
    new = _perturb(site.value, rng, _constants([tree, *donors]))
    if new is None or (new == site.value and type(new) is type(site.value)):
        return False
    site.value = new  # type: ignore[assignment]
    return True


def _callee_group(name: str) -> tuple[str, ...] | None:
    return next((group for group in CALLEE_GROUPS if name in group), None)


def _mutate_operator(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    sites: list[ast.AST] = []
    for slot in _slots(tree):
        node = slot.node
        if isinstance(node, ast.BinOp | ast.AugAssign | ast.BoolOp):
            sites.append(node)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and _callee_group(node.id):
            sites.append(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _callee_group(node.attr):
            sites.append(node)
    if not sites:
        return False
    site = rng.choice(sites)
    if isinstance(site, ast.BinOp | ast.AugAssign):
        choices = [op for op in ARITHMETIC if not isinstance(site.op, op)]
        site.op = rng.choice(choices)()
    elif isinstance(site, ast.BoolOp):
        site.op = ast.Or() if isinstance(site.op, ast.And) else ast.And()
    elif isinstance(site, ast.Name):
        site.id = rng.choice([n for n in _callee_group(site.id) or () if n != site.id])
    elif isinstance(site, ast.Attribute):
        site.attr = rng.choice([n for n in _callee_group(site.attr) or () if n != site.attr])
    return True


def _mutate_comparison(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    sites = [slot.node for slot in _slots(tree) if isinstance(slot.node, ast.Compare)]
    if not sites:
        return False
    site = rng.choice(sites)
    assert isinstance(site, ast.Compare)
    position = rng.randrange(len(site.ops))
    current = site.ops[position]
    group = next(g for g in COMPARISON_GROUPS if isinstance(current, g))
    site.ops[position] = rng.choice([op for op in group if not isinstance(current, op)])()
    return True


def _donor_statements(trees: Sequence[ast.AST]) -> list[ast.stmt]:
    statements: list[ast.stmt] = []
    for tree in trees:
        for block in _blocks(tree):
            for stmt in block[_first_editable(block) :]:
                if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    statements.append(stmt)
    return statements


def _mutate_insert(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    blocks = _blocks(tree)
    statements = _donor_statements([tree, *donors])
    if not blocks or not statements:
        return False
    block = rng.choice(blocks)
    donor = copy.deepcopy(rng.choice(statements))
    block.insert(rng.randint(_first_editable(block), len(block)), donor)
    return True


def _mutate_delete(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    blocks = [block for block in _blocks(tree) if len(block) > _first_editable(block)]
    if not blocks:
        return False
    block = rng.choice(blocks)
    start = _first_editable(block)
    if len(block) - start == 1 and isinstance(block[start], ast.Pass):
        return False
    del block[rng.randrange(start, len(block))]
    if len(block) == start:
        block.append(ast.Pass())
    return True


def _mutate_swap(tree: ast.Module, rng: random.Random, donors: Sequence[ast.Module]) -> bool:
    blocks = [block for block in _blocks(tree) if len(block) - _first_editable(block) >= 2]
    if not blocks:
        return False
    block = rng.choice(blocks)
    # Neighbours: reordering two adjacent steps is the edit that most often keeps a program meaningful.
    first = rng.randrange(_first_editable(block), len(block) - 1)
    block[first], block[first + 1] = block[first + 1], block[first]
    return True


Mutation = Callable[[ast.Module, random.Random, Sequence[ast.Module]], bool]

MUTATIONS: dict[str, Mutation] = {
    MUTATE_CONSTANT: _mutate_constant,
    MUTATE_OPERATOR: _mutate_operator,
    MUTATE_COMPARISON: _mutate_comparison,
    MUTATE_INSERT: _mutate_insert,
    MUTATE_DELETE: _mutate_delete,
    MUTATE_SWAP: _mutate_swap,
}
MUTATION_OPERATORS: tuple[str, ...] = tuple(MUTATIONS)


def _finish(tree: ast.Module, original: str) -> str | None:
    """Renders a transformed tree; None when it does not load or did not change."""
    try:
        code = render(tree)
        load(code)
    except (InvalidProgram, ValueError, RecursionError):
        return None
    return None if code == original else code


@lru_cache(maxsize=1024)
def _read_only_tree(code: str) -> ast.Module:
    """A parsed donor; operators only read donors (borrowed statements are deep-copied)."""
    return ast.parse(code)


def mutate(code: str, operator: str, rng: random.Random, donors: Sequence[str] = ()) -> str | None:
    """Applies one named mutation to ``code``; ``donors`` supply borrowed statements and constants.

    Raises:
        KeyError: for an unknown operator name.
    """
    mutation = MUTATIONS[operator]
    tree = ast.parse(code)
    donor_trees = [_read_only_tree(donor) for donor in donors]
    if not mutation(tree, rng, donor_trees):
        return None
    return _finish(tree, code)


# Paths address nodes from the module root: each step is (field, index) with index None for plain fields;
# a final (field, None) on a list field means "the whole list".
Path = tuple[tuple[str, int | None], ...]


def _differences(a: object, b: object, path: Path) -> Iterator[Path]:
    """Paths of the outermost points where two trees differ, walking them in parallel."""
    if type(a) is not type(b):
        yield path
        return
    if not isinstance(a, ast.AST) or not isinstance(b, ast.AST):
        return
    if _is_frozen(a):
        return
    leaf_differs = False
    for name in a._fields:
        left, right = getattr(a, name, None), getattr(b, name, None)
        if isinstance(left, list) and isinstance(right, list):
            if len(left) != len(right):
                yield (*path, (name, None))
                continue
            for index, (x, y) in enumerate(zip(left, right, strict=True)):
                if isinstance(x, ast.AST) or isinstance(y, ast.AST):
                    yield from _differences(x, y, (*path, (name, index)))
                elif x != y:
                    leaf_differs = True
        elif isinstance(left, ast.AST) or isinstance(right, ast.AST):
            if isinstance(left, ast.AST) and isinstance(right, ast.AST):
                yield from _differences(left, right, (*path, (name, None)))
            else:
                yield (*path, (name, None))
        elif left != right or type(left) is not type(right):
            leaf_differs = True
    if leaf_differs:
        yield path


def _get(tree: ast.AST, path: Path) -> object:
    node: object = tree
    for name, index in path:
        node = getattr(node, name)
        if index is not None:
            node = node[index]  # type: ignore[index]
    return node


def _put(tree: ast.AST, path: Path, value: object) -> None:
    *head, (name, index) = path
    parent = _get(tree, tuple(head))
    if index is None:
        setattr(parent, name, value)
    else:
        getattr(parent, name)[index] = value


def crossover(first: str, second: str, rng: random.Random) -> str | None:
    """Subtree crossover: ``first`` with subtrees taken from the same places in ``second``.

    The parents descend from the same seed, so they share structure; walking both trees in parallel
    finds the outermost subtrees where they differ, and each is copied over with probability 1/2 (at
    least one): homologous crossover, which moves one parent's fixes into the other without disturbing
    the rest. Parents with the same AST have nothing to exchange: None.
    """
    a, b = ast.parse(first), ast.parse(second)
    points = [path for path in dict.fromkeys(_differences(a, b, ())) if path]
    if not points:
        return None
    chosen = [path for path in points if rng.random() < 0.5] or [rng.choice(points)]
    for path in chosen:
        _put(a, path, copy.deepcopy(_get(b, path)))
    return _finish(a, first)
