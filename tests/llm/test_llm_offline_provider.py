"""The offline provider through the client: every purpose answers schema-valid JSON, deterministically."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tdev_common.llm import BadPayload, LLMClient, Message, OfflineUnsupported, prompts
from tdev_common.llm.schemas import schema_for
from tests.llm.conftest import ClientFactory

pytestmark = pytest.mark.mesh  # real servers or subprocesses

AGENT = '''"""Greets people."""


class Greeter:
    """Says hello."""

    def __init__(self) -> None:
        self.greeting = "Hello"

    def execute(self, inputs: dict) -> dict:
        """Greets the name."""
        name = inputs.get("name", "world")
        return {"message": f"{self.greeting}, {name}!", "length": len(name)}

    def get_capabilities(self) -> dict:
        """What it does."""
        return {"description": "Says hello."}
'''
SPEC = {"id": "count_words", "name": "WordCounter", "purpose": "Counts the words of the text.",
        "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        "output_schema": {"type": "object", "required": ["word_count"],
                          "properties": {"word_count": {"type": "integer"}}},
        "examples": [{"input": {"text": "a b c"}, "expected_output": {"word_count": 3}},
                     {"input": {"text": ""}, "expected_output": {"word_count": 0}}],
        "inputs": {"text": "inputs.text"}, "depends_on": []}
CASES: list[tuple[str, str | None, list[Message]]] = [
    ("analysis", None, prompts.analysis_messages(AGENT)),
    ("requirements", "analyse", prompts.requirements_analysis_messages("Count the words in a text.")),
    ("requirements", "plan", prompts.agent_plan_messages("Count the words in a text and report the most frequent.")),
    ("code_generation", None, prompts.codegen_messages(SPEC)),
    ("code_repair", None, prompts.repair_messages(AGENT, {"kind": "exception", "exception_type": "KeyError",
                                                          "message": "'name'"})),
    ("mutation", None, prompts.mutation_messages(AGENT, seed=7, rate=0.5)),
    ("mutation", None, prompts.crossover_messages(AGENT, AGENT.replace('"Hello"', '"Hi"'), seed=3)),
    ("review", None, prompts.review_messages(AGENT, spec=SPEC)),
]


async def _ask(client: LLMClient, purpose: str, task: str | None, messages: list[Message]) -> Any:
    return await client.complete(messages, schema=schema_for(purpose, task), purpose=purpose, max_tokens=4000,
                                 temperature=0.0)


@pytest.mark.parametrize(("purpose", "task", "messages"), CASES,
                         ids=[f"{p}-{t or i}" for i, (p, t, _m) in enumerate(CASES)])
async def test_every_purpose_answers_schema_valid_json_deterministically(
        make_client: ClientFactory, purpose: str, task: str | None, messages: list[Message]) -> None:
    client = await make_client(keys=())
    first = await _ask(client, purpose, task, messages)
    second = await _ask(client, purpose, task, messages)
    jsonschema.validate(first.data, schema_for(purpose, task))
    assert first.data == second.data and first.text == second.text
    assert first.model.endswith("(not a model)") and first.provider == "offline"
    assert (first.is_model, first.cost_usd, first.cached) == (False, 0.0, False)


async def test_offline_needs_the_payload_of_common_llm_prompts(make_client: ClientFactory) -> None:
    client = await make_client(keys=())
    with pytest.raises(BadPayload) as caught:
        await client.complete([Message.user("analyse my code please")], purpose="analysis", max_tokens=100,
                              temperature=0.0)
    assert "no user message carries a payload" in caught.value.message


async def test_offline_says_what_it_supports_when_requirements_are_out_of_reach(make_client: ClientFactory) -> None:
    client = await make_client(keys=())
    with pytest.raises(OfflineUnsupported) as caught:
        await client.complete(prompts.agent_plan_messages("Book me a flight to Lisbon"), purpose="requirements",
                              max_tokens=100, temperature=0.0)
    assert caught.value.message.startswith("the offline provider (rules and templates, not a model) found no "
                                           "supported step in 'Book me a flight to Lisbon'. It understands: text")
    assert caught.value.code.name == "FAILED_PRECONDITION"


async def test_offline_hashed_embeddings_when_routed(make_client: ClientFactory) -> None:
    client = await make_client(keys=(), embedding_route=["offline"])
    assert (client.embeddings_available(), client.embeddings_available(real_only=False)) == (False, True)
    result = await client.embed(["count the words", "count the words", "sort numbers"])
    assert result.model == "offline/hashed-bag-of-words (not a model)"
    assert (result.is_model, result.cost_usd, len(result.vectors[0])) == (False, 0.0, 256)
    assert result.vectors[0] == result.vectors[1] != result.vectors[2]
    assert sum(x * x for x in result.vectors[0]) == pytest.approx(1.0, abs=1e-4)
