"""Source edits that keep formatting: locate AST nodes as character spans and replace spans."""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    """Replace source[start:end] with text."""

    start: int
    end: int
    text: str


class Source:
    """A module's text with helpers from AST positions (1-based lines, UTF-8 byte columns) to offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self._starts = [0]
        for line in self.lines:
            self._starts.append(self._starts[-1] + len(line))

    def offset(self, line: int, column_bytes: int) -> int:
        """Character offset of a (line, byte column) position."""
        if line - 1 >= len(self.lines):
            return len(self.text)
        prefix = self.lines[line - 1].encode("utf-8")[:column_bytes].decode("utf-8", errors="ignore")
        return self._starts[line - 1] + len(prefix)

    def span(self, node: ast.AST) -> tuple[int, int]:
        """Character span of a node."""
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def segment(self, node: ast.AST) -> str:
        """The node's source text."""
        start, end = self.span(node)
        return self.text[start:end]

    def line_start(self, line: int) -> int:
        """Offset of the start of a line."""
        return self._starts[min(line - 1, len(self._starts) - 1)]


def apply(text: str, edits: list[Edit]) -> str:
    """Applies non-overlapping edits (overlapping later ones are skipped)."""
    result = text
    last_start = len(text) + 1
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        if edit.end > last_start:
            continue
        result = result[: edit.start] + edit.text + result[edit.end :]
        last_start = edit.start
    return result


def import_insertion_point(tree: ast.Module, source: Source) -> int:
    """Offset after the module docstring and __future__ imports, where a new import line goes."""
    line = 1
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
            node.value.value, str)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if (is_docstring and node is tree.body[0]) or is_future:
            line = (node.end_lineno or node.lineno) + 1
            continue
        break
    return source.line_start(line) if line <= len(source.lines) else len(source.text)


def search_replace_edits(old: str, new: str) -> list[dict[str, str]]:
    """Diff-style edits (``search`` unique in the text at that point, ``replace``) turning old into new."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    edits: list[dict[str, str]] = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        before, after = 0, 0
        while True:  # widen with context until the search text is unique
            search = "".join(old_lines[i1 - before:i2 + after])
            if search and old.count(search) == 1:
                break
            if i1 - before <= 0 and i2 + after >= len(old_lines):
                break
            before = min(before + 1, i1)
            after = min(after + 1, len(old_lines) - i2)
        replace = "".join(old_lines[i1 - before:i1] + new_lines[j1:j2] + old_lines[i2:i2 + after])
        edits.append({"search": search, "replace": replace})
    result = old
    for edit in edits:
        if not edit["search"] or result.count(edit["search"]) != 1:
            return [{"search": old, "replace": new}]
        result = result.replace(edit["search"], edit["replace"], 1)
    return edits if result == new else [{"search": old, "replace": new}]
