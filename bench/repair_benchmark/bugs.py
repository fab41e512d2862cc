"""Bug injectors of the repair benchmark: realistic single faults, each enumerating every place it applies.

Kept apart from the search's operators on purpose (this module imports nothing from evolution_svc): the
benchmark's faults are described by what programmers get wrong, not by what the operators can undo.
Kinds: off-by-one, wrong operator, missing clause, missing call, swapped arguments, wrong constant,
missing base case.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator

OFF_BY_ONE = "off_by_one"
WRONG_OPERATOR = "wrong_operator"
MISSING_CLAUSE = "missing_clause"
MISSING_CALL = "missing_call"
SWAPPED_ARGUMENTS = "swapped_arguments"
WRONG_CONSTANT = "wrong_constant"
MISSING_BASE_CASE = "missing_base_case"

# An edit of the node at one place: True when it changed something.
Edit = Callable[[ast.AST, ast.AST | None], bool]

_OPERATOR_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.FloorDiv, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
}
_COMPARE_SHIFTS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
}
_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_DROPPABLE_CALLS = {"min", "max", "round", "abs", "sorted", "int", "float", "str", "list"}
_DROPPABLE_METHODS = {"lower", "upper", "title", "strip", "capitalize", "lstrip", "rstrip"}


def _editable(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.AST | None]]:
    """(node, parent) pairs inside the agent's methods other than get_capabilities."""
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if isinstance(method, ast.FunctionDef) and method.name != "get_capabilities":
                stack: list[tuple[ast.AST, ast.AST | None]] = [(method, None)]
                while stack:
                    node, parent = stack.pop()
                    yield node, parent
                    stack.extend((child, node) for child in reversed(list(ast.iter_child_nodes(node))))


def _is_key(node: ast.AST, parent: ast.AST | None) -> bool:
    return (isinstance(parent, ast.Subscript) and parent.slice is node) or (isinstance(parent, ast.Dict) and any(
        key is node for key in parent.keys
    ))


def _off_by_one(node: ast.AST, parent: ast.AST | None) -> bool:
    if isinstance(node, ast.Compare):
        op = node.ops[0]
        swap = _COMPARE_SHIFTS.get(type(op))
        if swap is None:
            return False
        node.ops[0] = swap()
        return True
    if isinstance(node, ast.Constant) and type(node.value) is int and not _is_key(node, parent):
        node.value += 1 if node.value <= 1 else -1
        return True
    return False


def _wrong_operator(node: ast.AST, parent: ast.AST | None) -> bool:
    if isinstance(node, ast.BinOp | ast.AugAssign):
        swap = _OPERATOR_SWAPS.get(type(node.op))
        if swap is None:
            return False
        node.op = swap()
        return True
    if isinstance(node, ast.Compare):
        swap_cmp = _COMPARE_SWAPS.get(type(node.ops[0]))
        if swap_cmp is None:
            return False
        node.ops[0] = swap_cmp()
        return True
    if isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return True
    return False


def _missing_clause(node: ast.AST, parent: ast.AST | None) -> bool:
    """Drops an ``if`` statement (with its body), an ``else`` branch, or one side of ``and``/``or``."""
    if isinstance(node, ast.If) and node.orelse:
        node.orelse = []
        return True
    if isinstance(node, ast.BoolOp) and len(node.values) > 1:
        node.values.pop()
        if len(node.values) == 1:
            node.values.append(ast.Constant(isinstance(node.op, ast.And)))
        return True
    if isinstance(node, ast.comprehension) and node.ifs:
        node.ifs = []
        return True
    for field in ("body", "orelse"):
        block = getattr(node, field, None)
        if isinstance(block, list) and len(block) > 1:
            ifs = [index for index, stmt in enumerate(block) if isinstance(stmt, ast.If)]
            if ifs:
                del block[ifs[-1]]
                return True
    return False


def _missing_call(node: ast.AST, parent: ast.AST | None) -> bool:
    """Replaces ``f(x, ...)`` by ``x`` for a wrapping builtin, or ``x.lower()`` by ``x``, in the parent."""
    if parent is None or not isinstance(node, ast.Call):
        return False
    replacement: ast.expr | None = None
    if isinstance(node.func, ast.Name) and node.func.id in _DROPPABLE_CALLS and node.args:
        replacement = node.args[0]
    elif isinstance(node.func, ast.Attribute) and node.func.attr in _DROPPABLE_METHODS and not node.args:
        replacement = node.func.value
    if replacement is None:
        return False
    return _replace_child(parent, node, replacement)


def _replace_child(parent: ast.AST, old: ast.AST, new: ast.AST) -> bool:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return True
        if isinstance(value, list):
            for index, item in enumerate(value):
                if item is old:
                    value[index] = new
                    return True
    return False


def _swapped_arguments(node: ast.AST, parent: ast.AST | None) -> bool:
    if isinstance(node, ast.Call) and len(node.args) >= 2:
        node.args[0], node.args[1] = node.args[1], node.args[0]
        return ast.dump(node.args[0]) != ast.dump(node.args[1])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub | ast.Div | ast.FloorDiv | ast.Mod):
        node.left, node.right = node.right, node.left
        return ast.dump(node.left) != ast.dump(node.right)
    return False


def _wrong_constant(node: ast.AST, parent: ast.AST | None) -> bool:
    if not isinstance(node, ast.Constant) or _is_key(node, parent):
        return False
    value = node.value
    if type(value) is int:
        node.value = value * 10 if value not in (0, 1, -1) else value + 5
        return True
    if type(value) is float:
        node.value = round(value * 1.5 + 0.5, 3)
        return True
    if type(value) is str and len(value) <= 8:
        node.value = {"": " ", " ": "", "-": "_", ".": "-"}.get(value, value.upper() if value.islower() else "x")
        return node.value != value
    return False


def _missing_base_case(node: ast.AST, parent: ast.AST | None) -> bool:
    """In a recursive method, drops the ``if`` that returns without recursing."""
    if not isinstance(node, ast.FunctionDef):
        return False
    recursive = any(
        isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == node.name
        for call in ast.walk(node)
    )
    if not recursive:
        return False
    for index, stmt in enumerate(node.body):
        if isinstance(stmt, ast.If) and any(isinstance(inner, ast.Return) for inner in stmt.body):
            calls_itself = any(
                isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == node.name
                for call in ast.walk(stmt)
            )
            if not calls_itself:
                del node.body[index]
                return True
    return False


INJECTORS: dict[str, Edit] = {
    OFF_BY_ONE: _off_by_one,
    WRONG_OPERATOR: _wrong_operator,
    MISSING_CLAUSE: _missing_clause,
    MISSING_CALL: _missing_call,
    SWAPPED_ARGUMENTS: _swapped_arguments,
    WRONG_CONSTANT: _wrong_constant,
    MISSING_BASE_CASE: _missing_base_case,
}
BUG_KINDS: tuple[str, ...] = tuple(INJECTORS)


def variants(code: str, kind: str) -> list[str]:
    """Every distinct program with one bug of ``kind`` injected, in source order.

    Raises:
        KeyError: for an unknown kind.
    """
    inject = INJECTORS[kind]
    count = sum(1 for _ in _editable(ast.parse(code)))
    found: dict[str, None] = {}
    original = ast.unparse(ast.parse(code))
    for position in range(count):
        tree = ast.parse(code)
        node, parent = next(pair for index, pair in enumerate(_editable(tree)) if index == position)
        if not inject(node, parent):
            continue
        try:
            buggy = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
            compile(buggy, "<bug>", "exec")
        except (SyntaxError, ValueError):
            continue
        if buggy.strip() != original.strip():
            found.setdefault(buggy, None)
    return list(found)
