"""The real anthropic SDK against the local wire server."""

from __future__ import annotations

import pytest

from tdev_common.llm import InvalidModelOutput, Message
from tests.llm.conftest import ANTHROPIC_KEY, ClientFactory, SleepRecorder
from tests.llm.llm_wire_server import MESSAGES, Reply, WireServer, anthropic_message, error_body

pytestmark = pytest.mark.mesh  # real servers or subprocesses

SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
PROMPT = [Message.system("Be exact."), Message.user("2 + 2?")]
ONLY_ANTHROPIC = {"default_route": ["anthropic"]}


async def test_complete_sends_system_apart_and_no_temperature(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(MESSAGES, Reply(body=anthropic_message("4", input_tokens=20, output_tokens=7)))
    client = await make_client(keys=("anthropic",), **ONLY_ANTHROPIC)
    result = await client.complete(PROMPT, purpose="analysis", max_tokens=64, temperature=0.0)
    assert (result.text, result.provider, result.model) == ("4", "anthropic", "claude-test")
    assert (result.input_tokens, result.output_tokens) == (20, 7)
    assert result.cost_usd == pytest.approx((20 * 3.0 + 7 * 15.0) / 1e6)
    [request] = wire.to(MESSAGES)
    assert request.body == {"model": "claude-test", "max_tokens": 64, "system": "Be exact.",
                            "messages": [{"role": "user", "content": "2 + 2?"}]}
    assert request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert request.headers["anthropic-version"] == "2026-10-21"
    assert request.headers["x-stainless-retry-count"] == "0"


async def test_anthropic_answer_is_repaired_when_schema_fails(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(MESSAGES, Reply(body=anthropic_message('{"answer": "four"}')),
                Reply(body=anthropic_message('{"answer": 4}')))
    client = await make_client(keys=("anthropic",), **ONLY_ANTHROPIC)
    result = await client.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=64, temperature=0.0)
    assert (result.data, result.repaired) == ({"answer": 4}, True)
    second = wire.to(MESSAGES)[1].body
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert "$['answer']: 'four' is not of type 'integer'" in second["messages"][2]["content"]


async def test_anthropic_invalid_twice_raises(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(MESSAGES, Reply(body=anthropic_message("four")), Reply(body=anthropic_message("{}")))
    client = await make_client(keys=("anthropic",), **ONLY_ANTHROPIC)
    with pytest.raises(InvalidModelOutput) as caught:
        await client.complete(PROMPT, schema=SCHEMA, purpose="analysis", max_tokens=64, temperature=0.0)
    assert caught.value.message == ("anthropic/claude-test answered analysis with invalid JSON after 1 repair "
                                    "round(s): answer does not match the schema: $: 'answer' is a required property")


async def test_overloaded_then_rate_limited_then_success(wire: WireServer, make_client: ClientFactory,
                                                        sleeps: SleepRecorder) -> None:
    wire.script(MESSAGES, Reply(529, error_body("overloaded", "overloaded_error")),
                Reply(429, error_body("slow", "rate_limit_error"), {"retry-after": "1"}),
                Reply(body=anthropic_message("4")))
    client = await make_client(keys=("anthropic",), **ONLY_ANTHROPIC)
    result = await client.complete(PROMPT, purpose="analysis", max_tokens=64, temperature=0.0)
    assert result.text == "4"
    assert sleeps.waits == [0.01, 1.0]
    assert len(wire.to(MESSAGES)) == 3
