"""Ensemble for analysis: two providers answer, results merge, disagreements are reported."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tdev_common.llm.prompts import analysis_messages
from tdev_common.llm.schemas import ANALYSIS_SCHEMA
from tests.llm.conftest import ClientFactory
from tests.llm.llm_wire_server import CHAT, MESSAGES, Reply, WireServer, anthropic_message, error_body, openai_chat

pytestmark = pytest.mark.mesh  # real servers or subprocesses

CODE = "class A:\n    def execute(self, inputs):\n        return {'n': len(inputs['text'])}\n"


def _analysis(confidence: float, dependencies: list[str], output_type: str, score: float) -> dict[str, Any]:
    return {
        "agent_class": "A",
        "capabilities": {
            "summary": f"Counts characters ({confidence}).",
            "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
            "output_schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": output_type}}},
            "dependencies": dependencies,
            "estimated_performance": {"time_complexity": "O(1)"},
            "confidence": confidence,
        },
        "quality": {"score": score, "issues": [{"severity": "info", "message": f"note {confidence}"}]},
    }


async def test_ensemble_merges_two_providers_and_reports_disagreements(wire: WireServer,
                                                                       make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat(json.dumps(_analysis(0.9, ["re"], "integer", 0.8)),
                                             prompt_tokens=100, completion_tokens=50)))
    wire.script(MESSAGES, Reply(body=anthropic_message(json.dumps(_analysis(0.6, ["re", "json"], "number", 0.82)),
                                                       input_tokens=110, output_tokens=60)))
    client = await make_client(keys=("openai", "anthropic"))
    assert client.ensemble_available() is True
    result = await client.complete(analysis_messages(CODE), schema=ANALYSIS_SCHEMA, purpose="analysis",
                                   max_tokens=800, temperature=0.0)
    assert (result.provider, result.model) == ("ensemble", "openai/test-model+anthropic/claude-test")
    capabilities = result.data["capabilities"]
    assert capabilities["confidence"] == 0.6
    assert capabilities["dependencies"] == ["re", "json"]
    assert capabilities["summary"] == "Counts characters (0.9)."
    assert capabilities["output_schema"]["properties"]["n"] == {"type": "integer"}
    assert result.data["quality"]["score"] == pytest.approx(0.81)
    assert len(result.data["quality"]["issues"]) == 2
    report = result.ensemble
    assert report is not None and report.failed == {}
    assert [(d.path, d.values, d.resolution) for d in report.disagreements] == [
        ("capabilities.output_schema.properties.n.type",
         {"openai/test-model": "integer", "anthropic/claude-test": "number"}, "kept openai/test-model's value"),
        ("capabilities.dependencies", {"openai/test-model": ["re"], "anthropic/claude-test": ["re", "json"]},
         "union"),
        ("capabilities.confidence", {"openai/test-model": 0.9, "anthropic/claude-test": 0.6}, "lowest"),
    ]
    assert (result.input_tokens, result.output_tokens) == (210, 110)
    assert result.cost_usd == pytest.approx((100 * 1 + 50 * 2 + 110 * 3 + 60 * 15) / 1e6)
    assert (len(wire.to(CHAT)), len(wire.to(MESSAGES))) == (1, 1)


async def test_ensemble_degrades_to_one_member_when_the_other_fails(wire: WireServer,
                                                                    make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat(json.dumps(_analysis(0.9, ["re"], "integer", 0.8)))))
    wire.script(MESSAGES, Reply(401, error_body("invalid x-api-key", "authentication_error")))
    client = await make_client(keys=("openai", "anthropic"))
    result = await client.complete(analysis_messages(CODE), schema=ANALYSIS_SCHEMA, purpose="analysis",
                                   max_tokens=800, temperature=0.0)
    assert result.data == _analysis(0.9, ["re"], "integer", 0.8)
    assert result.ensemble is not None
    assert result.ensemble.failed == {"anthropic": "LLM provider anthropic refused the request: anthropic "
                                                   "answered HTTP 401: invalid x-api-key"}
    assert result.ensemble.disagreements == ()


async def test_single_real_provider_means_no_ensemble(wire: WireServer, make_client: ClientFactory) -> None:
    wire.script(CHAT, Reply(body=openai_chat(json.dumps(_analysis(0.7, [], "integer", 0.5)))))
    client = await make_client(keys=("openai",))
    assert client.ensemble_available() is False
    assert client.real_providers() == ["openai"]
    assert [p.name for p in client.configured_providers()] == ["openai", "offline"]
    result = await client.complete(analysis_messages(CODE), schema=ANALYSIS_SCHEMA, purpose="analysis",
                                   max_tokens=800, temperature=0.0)
    assert (result.provider, result.ensemble) == ("openai", None)
    assert wire.to(MESSAGES) == []
