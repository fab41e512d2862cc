"""Every call emits a span (provider, model, tokens, cost) and log lines without prompt bodies above DEBUG."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tdev_common.llm import Message
from tdev_common.llm.prompts import analysis_messages
from tdev_common.llm.schemas import ANALYSIS_SCHEMA
from tdev_common.redaction import register_secret
from tests.llm.conftest import ClientFactory
from tests.llm.llm_wire_server import CHAT, Reply, WireServer, openai_chat

pytestmark = pytest.mark.mesh  # real servers or subprocesses

SECRET_IN_PROMPT = "tok-9b8a7c6d5e4f3a2b"


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_call_emits_spans_with_provider_model_tokens_and_cost(wire: WireServer, make_client: ClientFactory,
                                                                    spans: InMemorySpanExporter) -> None:
    wire.script(CHAT, Reply(body=openai_chat("ok", prompt_tokens=12, completion_tokens=5)))
    client = await make_client(default_route=["openai"])
    await client.complete([Message.user("hi")], purpose="review", max_tokens=30, temperature=0.0)
    by_name = {span.name: dict(span.attributes or {}) for span in spans.get_finished_spans()}
    call = by_name["llm.call"]
    assert (call["gen_ai.system"], call["gen_ai.request.model"], call["gen_ai.response.model"]) == \
        ("openai", "test-model", "test-model")
    assert (call["gen_ai.usage.input_tokens"], call["gen_ai.usage.output_tokens"]) == (12, 5)
    assert call["tdev.llm.cost_usd"] == pytest.approx(22e-6)
    assert (call["tdev.llm.attempts"], call["tdev.llm.purpose"]) == (1, "review")
    outer = by_name["llm.complete"]
    assert (outer["gen_ai.system"], outer["tdev.llm.cached"], outer["tdev.llm.is_model"]) == ("openai", False, True)


async def test_info_logs_carry_no_bodies_and_debug_bodies_are_redacted(wire: WireServer, make_client: ClientFactory,
                                                                       logs: io.StringIO) -> None:
    register_secret(SECRET_IN_PROMPT)
    wire.script(CHAT, Reply(body=openai_chat("the answer")), Reply(body=openai_chat("again")))
    client = await make_client(default_route=["openai"])
    prompt = [Message.user(f"use {SECRET_IN_PROMPT} to say something private")]
    await client.complete(prompt, purpose="review", max_tokens=30, temperature=0.3)
    lines = _lines(logs)
    info = [line for line in lines if line["level"] != "debug"]
    assert {line["event"] for line in info} >= {"llm_call", "llm_completion"}
    assert all("private" not in json.dumps(line) and "the answer" not in json.dumps(line) for line in info)
    [body] = [line for line in lines if line["event"] == "llm_request_body"]
    assert body["messages"] == [{"role": "user", "content": "use ********** to say something private"}]
    assert SECRET_IN_PROMPT not in logs.getvalue()
    logging.getLogger().setLevel(logging.INFO)
    before = len(_lines(logs))
    await client.complete(prompt, purpose="review", max_tokens=30, temperature=0.3)
    events = [line["event"] for line in _lines(logs)[before:] if str(line["event"]).startswith("llm_")]
    assert events == ["llm_call", "llm_completion"]


async def test_offline_is_named_not_a_model_in_results_and_every_log_line(make_client: ClientFactory,
                                                                          logs: io.StringIO) -> None:
    client = await make_client(keys=())
    code = "class A:\n    def execute(self, inputs):\n        return {'n': 1}\n"
    result = await client.complete(analysis_messages(code), schema=ANALYSIS_SCHEMA, purpose="analysis",
                                   max_tokens=500, temperature=0.0)
    assert (result.provider, result.model, result.label, result.is_model) == (
        "offline", "offline/static-analyzer (not a model)", "offline/static-analyzer (not a model)", False)
    llm_lines = [line for line in _lines(logs) if str(line["event"]).startswith("llm_")
                 and line["event"] != "llm_providers_configured"]
    assert [line["event"] for line in llm_lines] == ["llm_request_body", "llm_call", "llm_response_body",
                                                     "llm_completion"]
    assert all(line["model"] == "offline/static-analyzer (not a model)" for line in llm_lines)
    assert all(line.get("is_model") in (False, None) for line in llm_lines)
