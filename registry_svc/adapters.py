"""The LLM layer (tdev_common.llm) as the registry's Analyzer and Embedder ports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from registry_svc.domain import AnalysisJob, AnalysisReport
from registry_svc.ports import Embedder
from tdev_common.config import CommonSettings
from tdev_common.llm import LLMClient, Purpose, build_llm
from tdev_common.llm.prompts import analysis_messages
from tdev_common.llm.schemas import ANALYSIS_SCHEMA

log = structlog.get_logger(__name__)

class LlmEmbedder:
    """Embeddings from the LLM layer's embeddings route (used only when a real provider offers them)."""

    name = "embeddings"

    def __init__(self, client: LLMClient) -> None:
        self._client = client

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text; raises what the LLM layer raises."""
        result = await self._client.embed(list(texts))
        return [list(vector) for vector in result.vectors]


class LlmAnalyzer:
    """Analyses agent code through the LLM layer: the ensemble when two providers are configured, else the
    first routed provider (the offline static analyser when no key is configured)."""

    def __init__(self, client: LLMClient, *, max_tokens: int = 2000) -> None:
        self._client = client
        self._max_tokens = max_tokens

    @classmethod
    async def open(cls, common: CommonSettings) -> LlmAnalyzer:
        """Builds the process's LLM client from settings.

        Raises:
            tdev_common.errors.Unavailable: Secrets Manager could not be read.
            tdev_common.llm.NoProviderConfigured: a model provider is required and none is configured.
        """
        return cls(await build_llm(common=common))

    async def analyze(self, job: AnalysisJob, static_metrics: dict[str, Any]) -> AnalysisReport:
        """Capabilities and the model's quality score; raises what the LLM layer raises."""
        completion = await self._client.complete(
            analysis_messages(job.code, name=job.name), schema=ANALYSIS_SCHEMA, purpose=Purpose.ANALYSIS,
            max_tokens=self._max_tokens, temperature=0.0)
        data = completion.data if isinstance(completion.data, dict) else {}
        capabilities = dict(data.get("capabilities") or {})
        quality = data.get("quality") or {}
        if completion.ensemble is not None:
            models = tuple(member.label for member in completion.ensemble.members)
            capabilities["disagreements"] = completion.ensemble.as_dict()["disagreements"]
        else:
            models = (completion.label,)
        score = quality.get("score")
        capabilities["model_assessment"] = {"score": score, "issues": list(quality.get("issues") or [])[:50]}
        return AnalysisReport(
            capabilities=capabilities,
            model_quality=float(score) if isinstance(score, int | float) else None,
            models_used=models,
        )

    def embedder(self) -> Embedder | None:
        """An Embedder when a real provider offers embeddings, else None (search uses text matching)."""
        return LlmEmbedder(self._client) if self._client.embeddings_available(real_only=True) else None

    async def close(self) -> None:
        """Closes the LLM client."""
        await self._client.close()
