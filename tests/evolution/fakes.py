"""Test doubles of the engine's ports: an in-memory measurement cache and a scripted, priced model."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from evolution_svc import transforms
from evolution_svc.domain import Measurement
from evolution_svc.llm_operators import child_code
from evolution_svc.ports import FailingCase, ModelAnswer, ModelError


class MemoryCache:
    """MeasurementCache in a dict."""

    def __init__(self) -> None:
        self.entries: dict[str, Measurement] = {}

    async def get(self, key: str) -> Measurement | None:
        return self.entries.get(key)

    async def put(self, key: str, measurement: Measurement) -> None:
        self.entries[key] = measurement


class ScriptedModel:
    """ModelClient answering from a list of MUTATION_SCHEMA-shaped answers at a fixed price per call."""

    def __init__(self, answers: Sequence[object], price: float = 0.0, is_model: bool = True) -> None:
        self.answers = list(answers)
        self.price = price
        self.calls: list[str] = []
        self._is_model = is_model

    @property
    def is_model(self) -> bool:
        return self._is_model

    def _answer(self, code: str, prompt: str) -> ModelAnswer:
        self.calls.append(prompt)
        if not self.answers:
            raise ModelError("no scripted answer left")
        return ModelAnswer(code=child_code(code, self.answers.pop(0)), cost_usd=self.price)

    async def mutate(self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int) -> ModelAnswer:
        return self._answer(
            code, json.dumps([{"inputs": f.inputs, "expected": f.expected, "got": f.got} for f in failing])
        )

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        return self._answer(code, other_code)


class TransformModel:
    """A priced stand-in for a model: answers with the AST transforms (deterministic for a seed)."""

    def __init__(self, price: float) -> None:
        self.price = price
        self.calls = 0

    @property
    def is_model(self) -> bool:
        return True

    async def mutate(self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int) -> ModelAnswer:
        self.calls += 1
        operator = transforms.MUTATION_OPERATORS[seed % len(transforms.MUTATION_OPERATORS)]
        return ModelAnswer(code=transforms.mutate(code, operator, random.Random(seed)), cost_usd=self.price)

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        self.calls += 1
        return ModelAnswer(code=transforms.crossover(code, other_code, random.Random(seed)), cost_usd=self.price)
