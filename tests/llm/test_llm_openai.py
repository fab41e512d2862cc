"""The real openai SDK against the local wire server: success, JSON, repair, retries, timeouts, breaker."""

from __future__ import annotations

import json

import grpc
import pytest

from tdev_common.llm import (
    CircuitOpen,
    InvalidModelOutput,
    Message,
    ProviderRejected,
    ProviderUnavailable,
    Purpose,
)
from tests.llm.conftest import OPENAI_KEY, ClientFactory, SleepRecorder
from tests.llm.llm_wire_server import CHAT, EMBEDDINGS, Reply, WireServer, error_body, openai_chat, openai_embeddings

pytestmark = pytest.mark.mesh  # real servers or subprocesses

SCHEMA = {"type": "object", "required": ["verdict", "score"],
          "properties": {"verdict": {"enum": ["yes", "no"]}, "score": {"type": "number"}}}
MESSAGES = [Message.system("You judge."), Message.user("Is 2 > 1?")]
ONLY_OPENAI = {"default_route": ["openai"]}


async def test_complete_returns_text_usage_and_cost_when_openai_answers(wire: WireServer,
                                                                       make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat("Yes.", prompt_tokens=12, completion_tokens=5)))
    client = await make_client(**ONLY_OPENAI)
    result = await client.complete(MESSAGES, purpose=Purpose.REVIEW, max_tokens=50, temperature=0.2)
    assert (result.text, result.provider, result.model) == ("Yes.", "openai", "test-model")
    assert (result.input_tokens, result.output_tokens) == (12, 5)
    assert result.cost_usd == pytest.approx((12 * 1.0 + 5 * 2.0) / 1e6)
    assert (result.cached, result.is_model, result.repaired, result.data) == (False, True, False, None)
    [request] = wire.to(CHAT)
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.headers["x-stainless-retry-count"] == "0"
    assert request.body == {"model": "test-model", "max_tokens": 50, "temperature": 0.2,
                            "messages": [{"role": "system", "content": "You judge."},
                                         {"role": "user", "content": "Is 2 > 1?"}]}


async def test_complete_parses_json_and_asks_for_it_when_schema_given(wire: WireServer,
                                                                      make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat('```json\n{"verdict": "yes", "score": 0.75}\n```')))
    client = await make_client(**ONLY_OPENAI)
    result = await client.complete(MESSAGES, schema=SCHEMA, purpose="review", max_tokens=50, temperature=0.0)
    assert result.data == {"verdict": "yes", "score": 0.75}
    body = wire.to(CHAT)[0].body
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["content"].startswith("You judge.\n\nReply with one JSON value")
    assert json.dumps(SCHEMA, sort_keys=True) in body["messages"][0]["content"]


async def test_invalid_answer_is_repaired_in_one_round_when_schema_fails(wire: WireServer,
                                                                         make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat('{"verdict": "yes"}', prompt_tokens=10, completion_tokens=4)),
                Reply(body=openai_chat('{"verdict": "yes", "score": 1}', prompt_tokens=30, completion_tokens=6)))
    client = await make_client(**ONLY_OPENAI)
    result = await client.complete(MESSAGES, schema=SCHEMA, purpose="review", max_tokens=50, temperature=0.0)
    assert result.data == {"verdict": "yes", "score": 1}
    assert result.repaired is True
    assert (result.input_tokens, result.output_tokens) == (40, 10)
    assert result.cost_usd == pytest.approx((40 * 1.0 + 10 * 2.0) / 1e6)
    first, second = wire.to(CHAT)
    assert second.body["messages"][:2] == first.body["messages"]
    assert second.body["messages"][2] == {"role": "assistant", "content": '{"verdict": "yes"}'}
    assert second.body["messages"][3] == {"role": "user", "content": (
        "Your previous answer was rejected: answer does not match the schema: $: 'score' is a required property. "
        "Reply again with only the corrected JSON value, valid against the schema given in the system message.")}


async def test_malformed_json_twice_raises_invalid_model_output(wire: WireServer,
                                                                make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat("not json {")), Reply(body=openai_chat("still {not json")))
    client = await make_client(**ONLY_OPENAI)
    with pytest.raises(InvalidModelOutput) as caught:
        await client.complete(MESSAGES, schema=SCHEMA, purpose="review", max_tokens=50, temperature=0.0)
    assert "after 1 repair round(s): answer is not valid JSON" in caught.value.message
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(wire.to(CHAT)) == 2


async def test_rate_limit_waits_for_retry_after_then_succeeds(wire: WireServer, make_client: ClientFactory,
                                                               sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(429, error_body("slow down", "rate_limit_error"), {"retry-after": "2"}),
                Reply(body=openai_chat("ok")))
    client = await make_client(**ONLY_OPENAI)
    result = await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.0)
    assert result.text == "ok"
    assert sleeps.waits == [2.0]
    assert len(wire.to(CHAT)) == 2


async def test_retry_after_ms_is_preferred_when_present(wire: WireServer, make_client: ClientFactory,
                                                        sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(429, error_body("slow"), {"retry-after-ms": "250", "retry-after": "9"}),
                Reply(body=openai_chat("ok")))
    client = await make_client(**ONLY_OPENAI)
    await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.0)
    assert sleeps.waits == [0.25]


async def test_server_errors_exhaust_retries_with_exponential_backoff(wire: WireServer, make_client: ClientFactory,
                                                                      sleeps: SleepRecorder) -> None:
    wire.script(CHAT, *[Reply(500, error_body("boom")) for _ in range(3)])
    client = await make_client(**ONLY_OPENAI)
    with pytest.raises(ProviderUnavailable) as caught:
        await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.0)
    assert caught.value.message == "LLM provider openai failed after 3 attempt(s): openai answered HTTP 500: boom"
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert sleeps.waits == [0.01, 0.02]
    assert len(wire.to(CHAT)) == 3


async def test_client_error_is_not_retried(wire: WireServer, make_client: ClientFactory,
                                           sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(400, error_body("bad model")))
    client = await make_client(**ONLY_OPENAI)
    with pytest.raises(ProviderRejected) as caught:
        await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.0)
    assert caught.value.message == "LLM provider openai refused the request: openai answered HTTP 400: bad model"
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (len(wire.to(CHAT)), sleeps.waits) == (1, [])


async def test_timeout_per_call_is_retried_then_unavailable(wire: WireServer, make_client: ClientFactory,
                                                            sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(body=openai_chat("late"), delay=1.5), Reply(body=openai_chat("late"), delay=1.5))
    client = await make_client(timeout_seconds=0.3, max_attempts=2, **ONLY_OPENAI)
    with pytest.raises(ProviderUnavailable) as caught:
        await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.0)
    assert caught.value.message.startswith("LLM provider openai timed out after 2 attempt(s)")
    assert len(wire.to(CHAT)) == 2
    assert sleeps.waits == [0.01]


async def test_breaker_opens_after_failures_and_refuses_without_sending(wire: WireServer,
                                                                        make_client: ClientFactory) -> None:
    now = [100.0]
    wire.script(CHAT, Reply(500, error_body("down")), Reply(500, error_body("down")), Reply(body=openai_chat("back")))
    client = await make_client(max_attempts=1, breaker_failure_threshold=2, breaker_reset_seconds=30,
                               clock=lambda: now[0], **ONLY_OPENAI)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.5)
    assert client.breaker_state("openai") == "open"
    with pytest.raises(CircuitOpen) as caught:
        await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.5)
    assert caught.value.message == "LLM provider openai is failing; circuit open, next trial in 30.0s"
    assert len(wire.to(CHAT)) == 2
    now[0] += 31
    assert client.breaker_state("openai") == "half_open"
    result = await client.complete(MESSAGES, purpose="review", max_tokens=20, temperature=0.5)
    assert (result.text, client.breaker_state("openai")) == ("back", "closed")


async def test_route_falls_back_to_offline_when_openai_is_down(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, *[Reply(503, error_body("overloaded")) for _ in range(3)])
    client = await make_client(default_route=["openai", "offline"])
    from tdev_common.llm.prompts import review_messages
    from tdev_common.llm.schemas import REVIEW_SCHEMA

    code = '"""A."""\n\n\nclass A:\n    """A."""\n\n    def execute(self, inputs: dict) -> dict:\n' \
           '        """Echo."""\n        return {"x": inputs["x"]}\n\n    def get_capabilities(self) -> dict:\n' \
           '        """Caps."""\n        return {}\n'
    result = await client.complete(review_messages(code), schema=REVIEW_SCHEMA, purpose="review", max_tokens=500,
                                   temperature=0.0)
    assert (result.provider, result.model) == ("offline", "offline/static-reviewer (not a model)")
    assert (result.fallbacks, result.is_model, result.cost_usd) == (("openai",), False, 0.0)
    assert result.data["verdict"] == "approve"


async def test_embeddings_are_costed_then_cached(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(EMBEDDINGS, Reply(body=openai_embeddings([[0.1, 0.2], [0.3, 0.4]], tokens=8)))
    client = await make_client()
    first = await client.embed(["alpha", "beta"])
    assert first.vectors == ((0.1, 0.2), (0.3, 0.4))
    assert (first.provider, first.model, first.input_tokens, first.cached) == ("openai", "embed-model", 8, False)
    assert first.cost_usd == pytest.approx(8 * 0.5 / 1e6)
    assert wire.to(EMBEDDINGS)[0].body == {"model": "embed-model", "input": ["alpha", "beta"],
                                           "encoding_format": "float"}
    second = await client.embed(["beta", "alpha"])
    assert second.vectors == ((0.3, 0.4), (0.1, 0.2))
    assert (second.cached, second.cost_usd, second.cached_count) == (True, 0.0, 2)
    assert len(wire.to(EMBEDDINGS)) == 1
