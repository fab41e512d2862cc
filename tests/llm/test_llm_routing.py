"""Routing, fallback order, explicit models, and the small wire helpers."""

from __future__ import annotations

import pytest

from tdev_common.llm import Message, NoProviderConfigured, ProviderUnavailable
from tdev_common.llm.routing import Router, Target
from tdev_common.llm.wire import retry_after_seconds, safe_text, safe_url
from tdev_common.redaction import register_secret
from tests.llm.conftest import ClientFactory, SleepRecorder
from tests.llm.llm_wire_server import CHAT, MESSAGES, Reply, WireServer, anthropic_message, error_body, openai_chat

pytestmark = pytest.mark.mesh  # real servers or subprocesses

PROMPT = [Message.user("hi")]


def test_router_skips_unconfigured_providers_and_keeps_order() -> None:
    router = Router({"analysis": ["anthropic:claude-x", "openai", "offline", "openai"]}, ["openai", "offline"],
                    configured={"openai", "offline"})
    assert router.targets("analysis") == [Target("openai"), Target("offline")]
    assert router.targets("review") == [Target("openai"), Target("offline")]
    assert router.targets("analysis", "gpt-x") == [Target("openai", "gpt-x")]
    assert router.targets("analysis", "offline:rules") == [Target("offline", "rules")]
    with pytest.raises(NoProviderConfigured) as caught:
        router.targets("analysis", "anthropic:claude-x")
    assert caught.value.message == "LLM provider 'anthropic' is not configured (configured: offline, openai)"
    with pytest.raises(NoProviderConfigured):
        Router({}, ["anthropic"], configured={"openai"}).targets("review")


async def test_fallback_order_is_openai_then_anthropic(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, *[Reply(502, error_body("bad gateway")) for _ in range(3)])
    wire.script(MESSAGES, Reply(body=anthropic_message("from claude")))
    client = await make_client(keys=("openai", "anthropic"))
    result = await client.complete(PROMPT, purpose="code_generation", max_tokens=10, temperature=0.0)
    assert (result.provider, result.text, result.fallbacks) == ("anthropic", "from claude", ("openai",))


async def test_long_retry_after_fails_fast_and_falls_back(wire: WireServer, make_client: ClientFactory,
                                                          sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(429, error_body("quota"), {"retry-after": "3600"}))
    wire.script(MESSAGES, Reply(body=anthropic_message("claude")))
    client = await make_client(keys=("openai", "anthropic"), retry_after_max_seconds=60)
    result = await client.complete(PROMPT, purpose="review", max_tokens=10, temperature=0.0)
    assert (result.provider, sleeps.waits, len(wire.to(CHAT))) == ("anthropic", [], 1)


async def test_explicit_model_disables_fallback(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, *[Reply(500, error_body("down")) for _ in range(3)],
                Reply(body=openai_chat("big", model="gpt-big")))
    client = await make_client(keys=("openai", "anthropic"))
    with pytest.raises(ProviderUnavailable):
        await client.complete(PROMPT, purpose="review", max_tokens=10, temperature=0.0, model="openai:test-model")
    assert wire.to(MESSAGES) == []
    result = await client.complete(PROMPT, purpose="review", max_tokens=10, temperature=0.0, model="gpt-big")
    assert (result.provider, result.model) == ("openai", "gpt-big")
    assert wire.to(CHAT)[-1].body["model"] == "gpt-big"


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "20"}) == 0.02
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_server_text_is_masked_and_trimmed() -> None:
    register_secret("registered-secret-value")
    text = safe_text("bad key sk-abcdefghijklmnop and registered-secret-value " + "x" * 300)
    assert text.startswith("bad key *** and ********** xxx") and text.endswith("...") and len(text) == 203
    assert safe_url("https://user:pw@llm.internal:8443/v1") == "https://llm.internal:8443/v1"
