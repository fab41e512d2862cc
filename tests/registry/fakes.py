"""Fakes of the registry's ports: the sandbox for unit tests, and embeddings (no offline provider has them)."""

from __future__ import annotations

import ast
from collections.abc import Sequence

from registry_svc.domain import Inspection
from registry_svc.ports import InspectionFailed


class FakeInspector:
    """Reads the literal dict ``get_capabilities`` returns with ``ast``; fails on a marker comment."""

    def __init__(self) -> None:
        self.calls = 0

    async def inspect(self, code: str, class_name: str) -> Inspection:
        self.calls += 1
        if "# crash-in-sandbox" in code:
            raise InspectionFailed("RuntimeError: boom")
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.FunctionDef) and node.name == "get_capabilities":
                for statement in ast.walk(node):
                    if isinstance(statement, ast.Return) and statement.value is not None:
                        try:
                            return Inspection(class_name, ast.literal_eval(statement.value))
                        except ValueError:
                            break
        return Inspection(class_name, {})


class FakeEmbedder:
    """Bag-of-words vectors over a fixed vocabulary: similar texts get similar vectors."""

    name = "fake-embeddings"
    VOCABULARY = ("word", "count", "text", "number", "sort", "sum", "csv", "json", "record", "list")

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(text.lower().count(term)) for term in self.VOCABULARY] for text in texts]
