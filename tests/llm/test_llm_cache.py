"""Response cache: identical temperature-0 requests answered from the in-process cache or Redis."""

from __future__ import annotations

import uuid

import pytest

from tdev_common.cache import RedisCache
from tdev_common.llm import Budget, Message
from tests.llm.conftest import ClientFactory
from tests.llm.llm_wire_server import CHAT, Reply, WireServer, openai_chat

pytestmark = pytest.mark.integration  # real databases, Redis or moto

SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
PROMPT = [Message.user("count")]


async def test_identical_deterministic_request_is_served_from_cache(wire: WireServer,
                                                                    make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat('{"n": 3}', prompt_tokens=9, completion_tokens=4)))
    client = await make_client(default_route=["openai"])
    budget = Budget("build cache", max_cost_usd=1.0)
    first = await client.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=20, temperature=0.0,
                                  budget=budget)
    second = await client.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=20, temperature=0.0,
                                   budget=budget)
    assert (first.cached, second.cached) == (False, True)
    assert second.data == {"n": 3} and second.text == '{"n": 3}'
    assert (second.cost_usd, second.input_tokens, second.output_tokens) == (0.0, 0, 0)
    assert (second.provider, second.model) == ("openai", "test-model")
    assert len(wire.to(CHAT)) == 1
    assert (budget.usage.calls, budget.usage.cached_calls) == (2, 1)
    assert budget.spent_usd == pytest.approx(first.cost_usd)


async def test_sampling_requests_are_not_cached(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat("a")), Reply(body=openai_chat("b")))
    client = await make_client(default_route=["openai"])
    texts = [(await client.complete(PROMPT, purpose="analysis", max_tokens=20, temperature=0.7)).text
             for _ in range(2)]
    assert texts == ["a", "b"]


async def test_different_max_tokens_is_a_different_request(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat("a")), Reply(body=openai_chat("b")))
    client = await make_client(default_route=["openai"])
    first = await client.complete(PROMPT, purpose="analysis", max_tokens=20, temperature=0.0)
    second = await client.complete(PROMPT, purpose="analysis", max_tokens=21, temperature=0.0)
    assert (first.text, second.text, second.cached) == ("a", "b", False)


async def test_redis_cache_is_shared_between_clients(wire: WireServer, make_client: ClientFactory,
                                                     redis_url: str) -> None:
    namespace = f"tdev-test-{uuid.uuid4().hex[:8]}:"
    wire.script(CHAT, Reply(body=openai_chat('{"n": 7}')))
    writer = await make_client(default_route=["openai"], cache=RedisCache(redis_url, namespace))
    reader_cache = RedisCache(redis_url, namespace)
    reader = await make_client(default_route=["openai"], cache=reader_cache)
    await writer.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=20, temperature=0.0)
    hit = await reader.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=20, temperature=0.0)
    assert (hit.cached, hit.data) == (True, {"n": 7})
    assert len(wire.to(CHAT)) == 1
    client = reader_cache.client
    keys = await client.keys(namespace + "*")  # type: ignore[attr-defined]
    assert len(keys) == 1 and keys[0].decode().startswith(namespace + "llm:v1:c:")
    await client.delete(*keys)  # type: ignore[attr-defined]
