"""Turns a library function into agent source: specialise parameters, fold constants, wrap in a class."""

from __future__ import annotations

import ast
import inspect
import operator
import pprint
import textwrap
from collections.abc import Callable
from typing import Any

# Names a library body may use, and the import each needs in the generated module.
_IMPORTS = {
    "csv": "import csv",
    "io": "import io",
    "math": "import math",
    "re": "import re",
    "stats": "import statistics as stats",
    "unicodedata": "import unicodedata",
    "Counter": "from collections import Counter",
    "Any": "from typing import Any",
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


def literal(value: Any) -> ast.expr:
    """An AST expression for a JSON-like value."""
    return ast.parse(repr(value), mode="eval").body


class _Specialise(ast.NodeTransformer):
    """Strings (keys, field names, modes) are inlined so the code reads plainly and folds; every other
    parameter becomes a ``self.<name>`` attribute set in ``__init__`` (tunable, and visible to evolution)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._inline = {k: v for k, v in params.items() if isinstance(v, str)}
        self._attributes = {k for k in params if k not in self._inline}

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if isinstance(node.ctx, ast.Load):
            if node.id in self._attributes:
                attribute = ast.Attribute(value=ast.Name("self", ast.Load()), attr=node.id, ctx=ast.Load())
                return ast.copy_location(attribute, node)
            if node.id in self._inline:
                return ast.copy_location(literal(self._inline[node.id]), node)
        return node


def _constant(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class _Fold(ast.NodeTransformer):
    """Folds what inlining made constant: comparisons, ``if`` on constants, f-string pieces."""

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        ok, left = _constant(node.left)
        if not ok:
            return node
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            ok, right = _constant(right_node)
            if not ok or type(op) not in _COMPARE:
                return node
            if not _COMPARE[type(op)](left, right):
                return ast.copy_location(ast.Constant(False), node)
            left = right
        return ast.copy_location(ast.Constant(True), node)

    def visit_If(self, node: ast.If) -> Any:
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant):
            return node.body if node.test.value else (node.orelse or None)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant):
            return node.body if node.test.value else node.orelse
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.expr:
        self.generic_visit(node)
        parts: list[ast.expr] = []
        for value in node.values:
            if (isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Constant)
                    and value.conversion == -1 and value.format_spec is None):
                value = ast.Constant(str(value.value.value))
            if isinstance(value, ast.Constant) and parts and isinstance(parts[-1], ast.Constant):
                parts[-1] = ast.Constant(str(parts[-1].value) + str(value.value))
            else:
                parts.append(value)
        if len(parts) == 1 and isinstance(parts[0], ast.Constant):
            return ast.copy_location(parts[0], node)
        node.values = parts
        return node


def _drop_unreachable(tree: ast.AST) -> None:
    """Statements after a return or raise in the same block (left behind by folding) are removed."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for index, statement in enumerate(block):
                if isinstance(statement, ast.Return | ast.Raise):
                    del block[index + 1 :]
                    break


def specialised_body(function: Callable[..., Any], params: dict[str, Any]) -> tuple[str, set[str]]:
    """The function's body with params applied, as source indented for a method, and the names it uses."""
    source = textwrap.dedent(inspect.getsource(function))
    definition = ast.parse(source).body[0]
    assert isinstance(definition, ast.FunctionDef)
    module = ast.Module(body=definition.body, type_ignores=[])
    module = _Specialise(params).visit(module)
    module = _Fold().visit(module)
    _drop_unreachable(module)
    ast.fix_missing_locations(module)
    names = {node.id for node in ast.walk(module) if isinstance(node, ast.Name)}
    return ast.unparse(module), names


def _prefixed(prefix: str, value: Any) -> str:
    """``prefix`` + the value's literal, continuation lines aligned under it."""
    lines = pprint.pformat(value, width=90, sort_dicts=False, compact=True).splitlines()
    return "\n".join([prefix + lines[0]] + [" " * len(prefix) + line for line in lines[1:]])


def render_agent(*, function: Callable[..., Any], params: dict[str, Any], class_name: str, description: str,
                 capabilities: dict[str, Any], template: str) -> str:
    """Complete agent source: module docstring, imports, one class with __init__/execute/get_capabilities."""
    body, names = specialised_body(function, params)
    imports = sorted({_IMPORTS[name] for name in names if name in _IMPORTS},
                     key=lambda line: (line.startswith("from "), line))
    attributes = {k: v for k, v in params.items() if not isinstance(v, str)}
    init_lines = [_prefixed(f"self.{name} = ", value) for name, value in attributes.items()] or ["pass"]
    capabilities_literal = _prefixed("return ", capabilities)
    parts = [
        f'"""{class_name}: {description}\n\nGenerated from the offline template {template!r} (not a model)."""',
        "",
    ]
    if imports:
        parts += [*imports, ""]
    parts += [
        "",
        f"class {class_name}:",
        f'    """{description}"""',
        "",
        "    def __init__(self) -> None:",
        textwrap.indent("\n".join(init_lines), " " * 8),
        "",
        "    def execute(self, inputs: dict) -> dict:",
        textwrap.indent(body, " " * 8),
        "",
        "    def get_capabilities(self) -> dict:",
        '        """Name, purpose and the JSON Schemas of the inputs and outputs."""',
        textwrap.indent(capabilities_literal, " " * 8),
        "",
    ]
    return "\n".join(parts)
