"""LLM operators: diff edits of one parent (its failing cases in the prompt) and crossover of two parents.

The prompts and answer shapes belong to the LLM layer (``tdev_common.llm.prompts``, ``MUTATION_SCHEMA``); this
module decides what goes into a request and how an answer becomes a child. Only training cases ever reach
a prompt; held-out cases are never shown to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evolution_svc.domain import Candidate, EvaluationCase, JsonValue
from evolution_svc.ports import FailingCase, ModelClient, ModelError

MAX_PROMPT_CASES = 5


@dataclass(frozen=True)
class Variation:
    """A model-made child (None when there is none) and the call's cost."""

    code: str | None
    cost_usd: float


def failing_cases(parent: Candidate, cases: Sequence[EvaluationCase]) -> tuple[FailingCase, ...]:
    """The parent's first failing training cases with what it returned or raised."""
    shown: list[FailingCase] = []
    for failure in parent.failures[:MAX_PROMPT_CASES]:
        if 0 <= failure.case_index < len(cases):
            case = cases[failure.case_index]
            shown.append(FailingCase(inputs=case.inputs, expected=case.expected or {}, got=failure.detail))
    return tuple(shown)


def apply_edits(code: str, edits: JsonValue) -> str | None:
    """``code`` with search/replace edits applied in order; None when one does not apply exactly once."""
    if not isinstance(edits, list) or not edits:
        return None
    result = code
    for edit in edits:
        if not isinstance(edit, dict):
            return None
        search, replacement = edit.get("search"), edit.get("replace")
        if not isinstance(search, str) or not isinstance(replacement, str) or not search:
            return None
        if result.count(search) != 1:
            return None
        result = result.replace(search, replacement, 1)
    return result


def child_code(parent_code: str, answer: JsonValue) -> str | None:
    """The child an answer describes: its diff edits applied to the parent, else its whole code."""
    if not isinstance(answer, dict):
        return None
    edited = apply_edits(parent_code, answer.get("edits"))
    code = edited if edited is not None else answer.get("code")
    if not isinstance(code, str) or not code.strip() or code == parent_code:
        return None
    return code


async def diff_edit(
    client: ModelClient, parent: Candidate, cases: Sequence[EvaluationCase], *, seed: int
) -> Variation:
    """Asks the model for a diff edit of ``parent``; a failed call yields no child."""
    try:
        answer = await client.mutate(
            parent.code, failing_cases(parent, cases), correctness=parent.correctness, seed=seed
        )
    except ModelError as error:
        return Variation(None, error.cost_usd)
    return Variation(answer.code, answer.cost_usd)


async def crossover(client: ModelClient, first: Candidate, second: Candidate, *, seed: int) -> Variation:
    """Asks the model to edit the first parent with what the second does better."""
    try:
        answer = await client.crossover(first.code, second.code, seed=seed)
    except ModelError as error:
        return Variation(None, error.cost_usd)
    return Variation(answer.code, answer.cost_usd)
