"""The model port over tdev_common.llm: mutation and crossover prompts, a per-run budget, diff-edit answers."""

from __future__ import annotations

import json
from collections.abc import Sequence

from evolution_svc.llm_operators import child_code
from evolution_svc.ports import FailingCase, ModelAnswer, ModelError
from tdev_common.errors import DomainError
from tdev_common.llm import Budget, LLMClient, Message, Purpose
from tdev_common.llm.prompts import PAYLOAD_MARKER, crossover_messages, mutation_messages, read_payload
from tdev_common.llm.schemas import MUTATION_SCHEMA

MAX_EDITS = 3


def with_failing_cases(
    messages: list[Message], failing: Sequence[FailingCase], correctness: float
) -> list[Message]:
    """The mutation prompt with the parent's failing training cases added to its payload."""
    payload = read_payload(messages)
    payload["passes"] = round(correctness, 4)
    payload["failing_cases"] = [
        {"inputs": case.inputs, "expected_output": case.expected, "got": case.got} for case in failing
    ]
    instruction = (
        "Edit this agent so that it passes more of its evaluation cases. The payload lists cases it fails, "
        "with the expected output and what it returned or raised. Prefer small search/replace edits."
    )
    body = json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False)
    return [*messages[:-1], Message.user(f"{instruction}\n\n{PAYLOAD_MARKER}\n{body}")]


class LlmModelClient:
    """One run's view of the LLM layer: its calls are charged to the run's budget."""

    def __init__(
        self, client: LLMClient, budget: Budget, *, temperature: float = 0.8, max_tokens: int = 4000
    ) -> None:
        self._client = client
        self._budget = budget
        self._temperature = temperature
        self._max_tokens = max_tokens

    @property
    def is_model(self) -> bool:
        """Whether a real model (not only the offline provider) is configured."""
        return bool(self._client.real_providers())

    async def _complete(self, messages: list[Message], parent_code: str) -> ModelAnswer:
        try:
            completion = await self._client.complete(
                messages,
                schema=MUTATION_SCHEMA,
                purpose=Purpose.MUTATION,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                budget=self._budget,
            )
        except DomainError as error:
            raise ModelError(error.message) from error
        return ModelAnswer(code=child_code(parent_code, completion.data), cost_usd=completion.cost_usd)

    async def mutate(
        self, code: str, failing: Sequence[FailingCase], *, correctness: float, seed: int
    ) -> ModelAnswer:
        """A diff edit of ``code`` with its failing cases in the prompt."""
        messages = with_failing_cases(mutation_messages(code, seed=seed, max_edits=MAX_EDITS), failing, correctness)
        return await self._complete(messages, code)

    async def crossover(self, code: str, other_code: str, *, seed: int) -> ModelAnswer:
        """``code`` combined with ``other_code``."""
        return await self._complete(crossover_messages(code, other_code, seed=seed), code)
