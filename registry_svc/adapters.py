"""The real ports: the sandbox (common.sandbox) as CodeInspector, the LLM layer (common.llm) as Analyzer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from common.config import CommonSettings
from common.llm import LLMClient, Purpose, build_llm
from common.llm.prompts import analysis_messages
from common.llm.schemas import ANALYSIS_SCHEMA
from common.sandbox import InspectResult, OutcomeKind, Sandbox, SandboxSettings
from registry_svc.domain import AnalysisJob, AnalysisReport, Inspection
from registry_svc.ports import Embedder, InspectionFailed

log = structlog.get_logger(__name__)

REQUIRED_METHODS = ("execute", "get_capabilities")


def describe_failure(result: InspectResult, timeout_seconds: float) -> str:
    """The sandbox's own account of a failed load, e.g. ``ImportError: No module named 'x'``."""
    outcome = result.outcome
    if outcome.kind is OutcomeKind.TIMEOUT:
        return f"timed out after {timeout_seconds:g} s"
    if outcome.kind is OutcomeKind.ERROR and outcome.error is not None:
        return f"{outcome.error.type}: {outcome.error.message}"[:1000]
    detail = outcome.detail or (outcome.error.message if outcome.error else "")
    return f"{outcome.kind.value}{': ' + detail if detail else ''}"[:1000]


class SandboxInspector:
    """Loads agent classes in the sandbox (never in this process) to read ``get_capabilities()``."""

    def __init__(self, sandbox: Sandbox, timeout_seconds: float) -> None:
        self._sandbox = sandbox
        self._timeout = timeout_seconds
        self._limits = sandbox.default_limits.replace(timeout_seconds=timeout_seconds,
                                                      cpu_seconds=timeout_seconds)

    @classmethod
    async def start(cls, common: CommonSettings, timeout_seconds: float, pool_size: int = 1) -> SandboxInspector:
        """Starts a sandbox for inspections.

        Raises:
            common.sandbox.SandboxError: the sandbox cannot start here.
        """
        return cls(await Sandbox.start(SandboxSettings.for_mode(common.mode, pool_size=pool_size)), timeout_seconds)

    async def inspect(self, code: str, class_name: str) -> Inspection:
        """Raises InspectionFailed with the sandbox's message on a crash, timeout or bad answer."""
        result = await self._sandbox.inspect(code, self._limits)
        if not result.ok:
            raise InspectionFailed(describe_failure(result, self._timeout))
        if result.class_name and result.class_name != class_name:
            raise InspectionFailed(f"the sandbox loaded class {result.class_name}, validation found {class_name}")
        missing = [m for m in REQUIRED_METHODS if m not in result.methods]
        if missing:
            raise InspectionFailed(f"the loaded class has no {', '.join(missing)}")
        return Inspection(class_name=class_name, declared_capabilities=_json_object(result.capabilities))

    async def close(self) -> None:
        """Stops the sandbox."""
        await self._sandbox.close()


def _json_object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


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
            common.errors.Unavailable: Secrets Manager could not be read.
            common.llm.NoProviderConfigured: a model provider is required and none is configured.
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
