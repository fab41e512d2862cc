"""Programs as ASTs: code hash, normalised-AST hash (the duplicate check), size and static validity."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from functools import lru_cache

# Methods the search never edits: changing them cannot change a score, only waste evaluations.
FROZEN_FUNCTIONS = frozenset({"get_capabilities"})


class InvalidProgram(ValueError):
    """The source is not a loadable agent program; the message says why."""


@lru_cache(maxsize=8192)
def code_hash(code: str) -> str:
    """Hex sha256 of the source, as the registry computes it."""
    return hashlib.sha256(code.encode()).hexdigest()


def parse(code: str) -> ast.Module:
    """Parses source; raises InvalidProgram with the syntax error's line."""
    try:
        return ast.parse(code)
    except SyntaxError as error:
        raise InvalidProgram(f"SyntaxError: {error.msg} (line {error.lineno})") from error
    except ValueError as error:  # null bytes
        raise InvalidProgram(f"ValueError: {error}") from error


def _strip_docstrings(node: ast.AST, stripped: list[tuple[ast.AST, list[ast.stmt]]]) -> None:
    """Drops docstrings of the module, classes and functions (which only nest inside each other's bodies),
    noting each replaced body in ``stripped`` so that the caller can put it back."""
    body = getattr(node, "body", None)
    if not isinstance(body, list):
        return
    if (
        isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        stripped.append((node, body))
        node.body = body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    for child in body:
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            _strip_docstrings(child, stripped)


def _normalised_dump_of(tree: ast.Module) -> str:
    """The tree without positions, comments, formatting or docstrings, as a string; the tree itself is left
    as it was (a loaded program's tree is shared)."""
    stripped: list[tuple[ast.AST, list[ast.stmt]]] = []
    _strip_docstrings(tree, stripped)
    try:
        return ast.dump(tree, annotate_fields=False, include_attributes=False)
    finally:
        for node, body in reversed(stripped):
            node.body = body  # type: ignore[attr-defined]


def _hash_of(tree: ast.Module) -> str:
    return hashlib.sha256(_normalised_dump_of(tree).encode()).hexdigest()


@lru_cache(maxsize=8192)
def ast_hash(code: str) -> str:
    """Hash of the normalised AST: programs with the same hash behave identically (the duplicate check).

    Raises:
        InvalidProgram: when the source does not parse.
    """
    try:
        return load(code).ast_hash  # mostly cached already: the one parse gives tree, hash and size
    except (InvalidProgram, RecursionError):
        return _hash_of(parse(code))  # parses, but is not a loadable agent


def size(tree: ast.AST) -> int:
    """Number of AST nodes (what ``ast.walk`` visits, counted without its generators)."""
    count = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        count += 1
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(item for item in value if isinstance(item, ast.AST))
    return count


def agent_class(tree: ast.Module) -> ast.ClassDef:
    """The one top-level class with an ``execute`` method; raises InvalidProgram otherwise."""
    classes = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == "execute"
            for item in node.body
        )
    ]
    if not classes:
        raise InvalidProgram("no class with an execute method")
    if len(classes) > 1:
        raise InvalidProgram(f"more than one agent class: {', '.join(c.name for c in classes)}")
    return classes[0]


@dataclass(frozen=True)
class Program:
    """A parsed, statically valid agent program with its identities."""

    code: str
    tree: ast.Module
    code_hash: str
    ast_hash: str
    size: int
    class_name: str


@lru_cache(maxsize=4096)
def load(code: str) -> Program:
    """Parses and checks a program (syntax, one agent class, compiles); raises InvalidProgram.

    Cached by source: callers must not modify the returned tree.
    """
    tree = parse(code)
    cls = agent_class(tree)
    try:
        compile(tree, "<candidate>", "exec")
    except (SyntaxError, ValueError) as error:
        raise InvalidProgram(f"{type(error).__name__}: {error}") from error
    return Program(
        code=code,
        tree=tree,
        code_hash=code_hash(code),
        ast_hash=_hash_of(tree),
        size=size(tree),
        class_name=cls.name,
    )


def render(tree: ast.Module) -> str:
    """Source of a (transformed) tree, ending with a newline."""
    return ast.unparse(tree) + "\n"
