"""Offline mutation and crossover: seeded program transforms on agent source, formatting preserved."""

from __future__ import annotations

import ast
import random
import textwrap
from dataclasses import dataclass
from typing import Any

from tdev_common.errors import InvalidArgument
from tdev_common.llm.offline.codeinfo import find_agent_class
from tdev_common.llm.offline.edits import Edit, Source, apply, import_insertion_point, search_replace_edits

_COMPARE_SWAPS: dict[type[ast.cmpop], list[str]] = {
    ast.Lt: ["<=", ">"], ast.LtE: ["<", ">="], ast.Gt: [">=", "<"], ast.GtE: [">", "<="],
    ast.Eq: ["!="], ast.NotEq: ["=="],
}
_COMPARE_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_ARITH_SWAPS: dict[type[ast.operator], str] = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*",
                                                ast.FloorDiv: "/", ast.Mod: "//"}
_ARITH_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
_FLOAT_FACTORS = (-0.5, -0.25, -0.1, 0.1, 0.25, 0.5)


@dataclass(frozen=True)
class Site:
    """One place a mutation can happen."""

    kind: str
    node: ast.AST
    line: int


def _excluded_ranges(tree: ast.Module) -> list[tuple[int, int]]:
    """Lines not to mutate: get_capabilities (its literal describes the agent) and docstrings."""
    ranges = []
    agent = find_agent_class(tree)
    if agent is not None:
        for item in agent.body:
            if isinstance(item, ast.FunctionDef) and item.name == "get_capabilities":
                ranges.append((item.lineno, item.end_lineno or item.lineno))
    return ranges


def _docstring_nodes(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _is_stringy(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def sites(tree: ast.Module) -> list[Site]:
    """Every mutable site in source order."""
    excluded = _excluded_ranges(tree)
    docstrings = _docstring_nodes(tree)
    found: list[Site] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if line is None or any(start <= line <= end for start, end in excluded) or id(node) in docstrings:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            found.append(Site("boolean_flip", node, line))
        elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            found.append(Site("constant_perturbation", node, line))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE_SWAPS:
            found.append(Site("comparison_swap", node, line))
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH_SWAPS and not (
                _is_stringy(node.left) or _is_stringy(node.right)):
            found.append(Site("operator_swap", node, line))
        elif isinstance(node, ast.BoolOp):
            found.append(Site("boolean_operator_swap", node, line))
    return sorted(found, key=lambda s: (s.line, getattr(s.node, "col_offset", 0), s.kind))


def _perturb(value: int | float, rng: random.Random) -> int | float:
    if isinstance(value, int):
        options = [v for v in (value + 1, value - 1, value * 2, value // 2 if value else 1) if v != value]
        return rng.choice(options)
    factor = rng.choice(_FLOAT_FACTORS)
    changed = round(value * (1 + factor), 6)
    return changed if changed != value else round(value + 0.5, 6)


def _operator_edit(source: Source, left: ast.AST, right: ast.AST, old: str, new: str) -> Edit | None:
    start = source.span(left)[1]
    end = source.span(right)[0]
    between = source.text[start:end]
    if between.replace("(", "").replace(")", "").strip() != old:
        return None
    index = between.find(old)
    return Edit(start + index, start + index + len(old), new)


def _edit_for(site: Site, source: Source, rng: random.Random) -> Edit | None:
    node = site.node
    if site.kind == "boolean_flip" and isinstance(node, ast.Constant):
        return Edit(*source.span(node), repr(not node.value))
    if site.kind == "constant_perturbation" and isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Edit(*source.span(node), repr(_perturb(node.value, rng)))
    if site.kind == "comparison_swap" and isinstance(node, ast.Compare):
        op = type(node.ops[0])
        return _operator_edit(source, node.left, node.comparators[0], _COMPARE_TEXT[op],
                              rng.choice(_COMPARE_SWAPS[op]))
    if site.kind == "operator_swap" and isinstance(node, ast.BinOp):
        op_type = type(node.op)
        return _operator_edit(source, node.left, node.right, _ARITH_TEXT[op_type], _ARITH_SWAPS[op_type])
    if site.kind == "boolean_operator_swap" and isinstance(node, ast.BoolOp):
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        return _operator_edit(source, node.values[0], node.values[1], old, new)
    return None


def mutate(code: str, *, seed: int, rate: float = 0.1, max_edits: int = 3) -> dict[str, Any]:
    """MUTATION_SCHEMA answer: each site mutates with probability ``rate`` (at least one, at most max_edits).

    Raises:
        InvalidArgument: the code does not parse.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise InvalidArgument(f"code does not parse: line {error.lineno}: {error.msg}") from None
    rng = random.Random(seed)
    source = Source(code)
    candidates = sites(tree)
    chosen = [site for site in candidates if rng.random() < rate]
    if not chosen and candidates:
        chosen = [rng.choice(candidates)]
    if len(chosen) > max_edits:
        chosen = sorted(rng.sample(chosen, max_edits), key=lambda s: s.line)
    edits: list[Edit] = []
    operations: list[dict[str, Any]] = []
    for site in chosen:
        edit = _edit_for(site, source, rng)
        if edit is None:
            continue
        before = source.text[edit.start:edit.end]
        if any(not (edit.end <= other.start or other.end <= edit.start) for other in edits):
            continue
        edits.append(edit)
        operations.append({"kind": site.kind, "line": site.line, "before": before, "after": edit.text,
                           "description": f"{site.kind.replace('_', ' ')} at line {site.line}: {before} -> "
                                          f"{edit.text}"})
    mutated = apply(code, edits)
    ast.parse(mutated)
    return {"code": mutated, "operations": operations, "edits": search_replace_edits(code, mutated), "seed": seed}


def _method_text(source: Source, node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int, str]:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    start = source.line_start(first)
    end_line = node.end_lineno or node.lineno
    end = source.line_start(end_line + 1) if end_line < len(source.lines) else len(source.text)
    return start, end, source.text[start:end]


def crossover(code: str, other_code: str, *, seed: int) -> dict[str, Any]:
    """MUTATION_SCHEMA answer combining two parents: each shared method comes from either, by seed.

    Raises:
        InvalidArgument: a parent does not parse or has no agent class.
    """
    try:
        tree_a, tree_b = ast.parse(code), ast.parse(other_code)
    except SyntaxError as error:
        raise InvalidArgument(f"a parent does not parse: line {error.lineno}: {error.msg}") from None
    agent_a, agent_b = find_agent_class(tree_a), find_agent_class(tree_b)
    if agent_a is None or agent_b is None:
        raise InvalidArgument("both parents must define an agent class with execute")
    rng = random.Random(seed)
    source_a, source_b = Source(code), Source(other_code)
    methods_a = {n.name: n for n in agent_a.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    methods_b = {n.name: n for n in agent_b.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    shared = [name for name in methods_a if name in methods_b and name != "get_capabilities"
              and ast.dump(methods_a[name]) != ast.dump(methods_b[name])]
    take = [name for name in shared if rng.random() < 0.5]
    if shared and not take:
        take = [rng.choice(shared)]
    edits: list[Edit] = []
    operations: list[dict[str, Any]] = []
    for name in take:
        start, end, _text = _method_text(source_a, methods_a[name])
        _s, _e, donor = _method_text(source_b, methods_b[name])
        indent_a = methods_a[name].col_offset
        donor = textwrap.indent(textwrap.dedent(donor), " " * indent_a)
        edits.append(Edit(start, end, donor))
        operations.append({"kind": "crossover", "line": methods_a[name].lineno,
                           "description": f"method {name} taken from the second parent"})
    imports_a = {ast.unparse(n) for n in tree_a.body if isinstance(n, ast.Import | ast.ImportFrom)}
    missing = [ast.unparse(n) for n in tree_b.body if isinstance(n, ast.Import | ast.ImportFrom)
               and ast.unparse(n) not in imports_a and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    if missing and take:
        position = import_insertion_point(tree_a, source_a)
        edits.append(Edit(position, position, "".join(line + "\n" for line in missing)))
        operations.append({"kind": "crossover_imports", "description": "imports of the second parent: "
                                                                        + "; ".join(missing)})
    child = apply(code, edits)
    ast.parse(child)
    return {"code": child, "operations": operations, "edits": search_replace_edits(code, child), "seed": seed}
