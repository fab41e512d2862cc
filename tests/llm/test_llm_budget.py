"""Budgets: reserved before each call, settled after, never overshot; typed RESOURCE_EXHAUSTED errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tdev_common.errors import ResourceExhausted
from tdev_common.llm import Budget, BudgetExceeded, DailyBudget, Message, Price
from tdev_common.llm.budget import reserve
from tdev_common.llm.prompts import review_messages
from tdev_common.llm.schemas import REVIEW_SCHEMA
from tests.llm.conftest import PRICES, ClientFactory
from tests.llm.llm_wire_server import CHAT, Reply, WireServer, openai_chat

pytestmark = pytest.mark.mesh  # real servers or subprocesses

PROMPT = [Message.user("hello")]
EXPENSIVE = {**PRICES, "openai:test-model": Price(input_per_mtok=0.0, output_per_mtok=1000.0)}


async def test_exhausted_budget_refuses_before_any_request(wire: WireServer, make_client: ClientFactory) -> None:
    client = await make_client(default_route=["openai"], prices=EXPENSIVE)
    budget = Budget("build build_42", max_cost_usd=0.05)
    with pytest.raises(BudgetExceeded) as caught:
        await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.0, budget=budget)
    error = caught.value
    assert isinstance(error, ResourceExhausted)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == ("LLM budget 'build build_42' exhausted: a openai/test-model call for review "
                             "(max_tokens=100) may cost up to $0.100000 but only $0.050000 of $0.0500 is left")
    assert error.metadata == {"budget": "build build_42", "limit_usd": "0.05", "remaining_usd": "0.050000",
                              "needed_usd": "0.100000"}
    assert wire.requests == []
    assert (budget.spent_usd, budget.reserved_usd) == (0.0, 0.0)


async def test_reservation_is_settled_to_the_real_cost(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat("hi", prompt_tokens=3, completion_tokens=5)))
    client = await make_client(default_route=["openai"], prices=EXPENSIVE)
    budget = Budget("run evo_1", max_cost_usd=1.0, max_tokens=10_000)
    result = await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.0, budget=budget)
    assert result.cost_usd == pytest.approx(0.005)
    assert budget.spent_usd == pytest.approx(0.005)
    assert budget.reserved_usd == 0.0
    assert budget.remaining_usd == pytest.approx(0.995)
    assert budget.remaining_tokens == 10_000 - 8
    usage = budget.usage
    assert (usage.calls, usage.input_tokens, usage.output_tokens, usage.models) == (1, 3, 5, ("openai/test-model",))


async def test_concurrent_calls_never_overshoot_the_budget(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, *[Reply(body=openai_chat("ok", prompt_tokens=1, completion_tokens=5), delay=0.2)
                        for _ in range(3)])
    client = await make_client(default_route=["openai"], prices=EXPENSIVE)
    budget = Budget("build b", max_cost_usd=0.25)
    outcomes = await asyncio.gather(
        *(client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.5, budget=budget)
          for _ in range(3)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(refused) == 1
    assert len(wire.to(CHAT)) == 2
    assert budget.spent_usd == pytest.approx(0.01)
    assert budget.reserved_usd == 0.0


async def test_token_budget_refuses_when_max_tokens_do_not_fit(wire: WireServer, make_client: ClientFactory) -> None:
    client = await make_client(default_route=["openai"])
    budget = Budget("build tokens", max_tokens=50)
    with pytest.raises(BudgetExceeded) as caught:
        await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.0, budget=budget)
    assert "may use up to 129 tokens but only 50 of 50 are left" in caught.value.message
    assert wire.requests == []


async def test_daily_budget_applies_to_every_call_and_resets_at_midnight(wire: WireServer,
                                                                         make_client: ClientFactory) -> None:
    now = [datetime(2026, 1, 1, 23, 0, tzinfo=UTC)]
    daily = DailyBudget(0.15, clock=lambda: now[0])
    wire.script(CHAT, *[Reply(body=openai_chat("ok", prompt_tokens=0, completion_tokens=100)) for _ in range(2)])
    client = await make_client(default_route=["openai"], prices=EXPENSIVE, daily=daily)
    await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.5)
    assert daily.spent_usd == pytest.approx(0.1)
    with pytest.raises(BudgetExceeded) as caught:
        await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.5)
    assert caught.value.message.startswith("LLM budget 'daily' exhausted")
    now[0] += timedelta(hours=2)
    await client.complete(PROMPT, purpose="review", max_tokens=100, temperature=0.5)
    assert daily.spent_usd == pytest.approx(0.1)
    assert len(wire.to(CHAT)) == 2


async def test_offline_calls_cost_nothing_and_pass_an_empty_budget(make_client: ClientFactory) -> None:
    client = await make_client(keys=(), default_route=["offline"])
    budget = Budget("build empty", max_cost_usd=0.0, max_tokens=0)
    code = '"""M."""\n\n\nclass A:\n    """A."""\n\n    def execute(self, inputs: dict) -> dict:\n' \
           '        """E."""\n        return {"y": 1}\n\n    def get_capabilities(self) -> dict:\n' \
           '        """C."""\n        return {}\n'
    result = await client.complete(review_messages(code), schema=REVIEW_SCHEMA, purpose="review", max_tokens=500,
                                   temperature=0.0, budget=budget)
    assert (result.cost_usd, result.input_tokens, result.output_tokens) == (0.0, 0, 0)
    assert budget.usage.calls == 1
    assert budget.usage.models == ("offline/static-reviewer (not a model)",)


def test_reserve_is_all_or_nothing_across_budgets() -> None:
    build = Budget("build", max_cost_usd=1.0)
    daily = Budget("daily", max_cost_usd=0.1)
    with pytest.raises(BudgetExceeded):
        reserve([build, daily], 0.2, 0, what="a call")
    assert (build.reserved_usd, daily.reserved_usd) == (0.0, 0.0)
    held = reserve([build, None, daily], 0.08, 10, what="a call")
    assert (build.reserved_usd, daily.reserved_usd) == (0.08, 0.08)
    held.settle(0.02, 4, 6, "openai/x")
    held.settle(0.5, 4, 6, "openai/x")  # a second settle is ignored
    assert (build.spent_usd, build.reserved_usd, daily.remaining_usd) == (0.02, 0.0, pytest.approx(0.08))
    released = reserve([build], 0.3, 0, what="a call")
    released.release()
    assert build.remaining_usd == pytest.approx(0.98)
