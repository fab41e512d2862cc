"""Fakes of the registry's ports for tests of the service layer (never for the gRPC suite)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from typing import Any

from registry_svc.domain import AnalysisJob, AnalysisReport, Inspection
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


class FakeAnalyzer:
    """Answers from the description; ``gate`` (when set) holds every analysis until released."""

    def __init__(self, quality: float = 0.8, fail: bool = False) -> None:
        self.quality = quality
        self.fail = fail
        self.gate: asyncio.Event | None = None
        self.calls = 0

    async def analyze(self, job: AnalysisJob, static_metrics: dict[str, Any]) -> AnalysisReport:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("model unavailable")
        return AnalysisReport(
            capabilities={"summary": job.description or job.name, "input_schema": {}, "output_schema": {},
                          "dependencies": [], "estimated_performance": {}, "confidence": 0.5},
            model_quality=self.quality, models_used=("fake/analyzer",),
        )


class FakeEmbedder:
    """Bag-of-words vectors over a fixed vocabulary: similar texts get similar vectors."""

    name = "fake-embeddings"
    VOCABULARY = ("word", "count", "text", "number", "sort", "sum", "csv", "json", "record", "list")

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(text.lower().count(term)) for term in self.VOCABULARY] for text in texts]
