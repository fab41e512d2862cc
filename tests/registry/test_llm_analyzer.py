"""The LLM analyzer adapter: an ensemble answer records both models and their disagreements."""

from __future__ import annotations

from typing import Any

import pytest

from registry_svc.adapters import LlmAnalyzer
from registry_svc.domain import AnalysisJob, VersionRef
from tdev_common.llm import Completion, EnsembleReport
from tdev_common.llm.base import Disagreement

pytestmark = pytest.mark.unit  # no I/O

ANSWER = {
    "capabilities": {"summary": "Counts words.", "input_schema": {}, "output_schema": {}, "dependencies": [],
                     "estimated_performance": {"time_complexity": "O(n)"}, "confidence": 0.8},
    "quality": {"score": 0.75, "issues": [{"severity": "info", "message": "fine"}]},
}


def _completion(provider: str, model: str, ensemble: EnsembleReport | None = None) -> Completion:
    return Completion(text="{}", data=ANSWER, provider=provider, model=model, purpose="analysis", input_tokens=10,
                      output_tokens=10, cost_usd=0.001, latency_ms=5.0, ensemble=ensemble)


class FakeClient:
    """Answers like LLMClient.complete; records what it was asked."""

    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        self.asked: dict[str, Any] = {}

    async def complete(self, messages: Any, **options: Any) -> Completion:
        self.asked = options
        return self.completion

    def embeddings_available(self, *, real_only: bool = True) -> bool:
        return False


JOB = AnalysisJob(ref=VersionRef("agent_x", "1.0.0"), name="word_count", description="", code="class A: ...",
                  class_name="A", declared_capabilities={}, owner="o", attempt=1)


async def test_llm_analyzer_records_ensemble_members_and_disagreements() -> None:
    members = (_completion("openai", "gpt-x"), _completion("anthropic", "claude-y"))
    report = EnsembleReport(members=members, failed={}, disagreements=(
        Disagreement(path="capabilities.confidence", values={"openai": 0.8, "anthropic": 0.6}, resolution="mean"),))
    client = FakeClient(_completion("ensemble", "openai+anthropic", report))
    result = await LlmAnalyzer(client).analyze(JOB, {})  # type: ignore[arg-type]
    assert client.asked["purpose"] == "analysis" and client.asked["temperature"] == 0.0
    assert result.models_used == ("openai/gpt-x", "anthropic/claude-y")
    assert result.model_quality == 0.75
    assert result.capabilities["disagreements"] == [
        {"path": "capabilities.confidence", "values": {"openai": 0.8, "anthropic": 0.6}, "resolution": "mean"}]
    assert result.capabilities["model_assessment"] == {"score": 0.75,
                                                       "issues": [{"severity": "info", "message": "fine"}]}


async def test_llm_analyzer_records_the_single_provider_used() -> None:
    result = await LlmAnalyzer(FakeClient(_completion("offline", "static-analyzer (not a model)"))).analyze(  # type: ignore[arg-type]
        JOB, {})
    assert result.models_used == ("offline/static-analyzer (not a model)",)
    assert "disagreements" not in result.capabilities
