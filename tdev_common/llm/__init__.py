"""The LLM layer: the only way services talk to language models (see docs/llm.md).

Build once per process with ``await build_llm(...)``; call ``complete(...)`` with messages from
``tdev_common.llm.prompts`` and a schema from ``tdev_common.llm.schemas``; pass a ``Budget`` per build or run.
"""

from tdev_common.llm.base import Completion, Embeddings, EnsembleReport, Message, ProviderInfo, Purpose
from tdev_common.llm.budget import Budget, BudgetUsage, DailyBudget
from tdev_common.llm.client import LLMClient
from tdev_common.llm.errors import (
    BadPayload,
    BudgetExceeded,
    CircuitOpen,
    EmbeddingsUnsupported,
    InvalidModelOutput,
    NoProviderConfigured,
    OfflineUnsupported,
    ProviderRejected,
    ProviderUnavailable,
)
from tdev_common.llm.factory import build_llm, process_daily_budget
from tdev_common.llm.settings import LLMSettings, Price

__all__ = [
    "BadPayload",
    "Budget",
    "BudgetExceeded",
    "BudgetUsage",
    "CircuitOpen",
    "Completion",
    "DailyBudget",
    "Embeddings",
    "EmbeddingsUnsupported",
    "EnsembleReport",
    "InvalidModelOutput",
    "LLMClient",
    "LLMSettings",
    "Message",
    "NoProviderConfigured",
    "OfflineUnsupported",
    "Price",
    "ProviderInfo",
    "ProviderRejected",
    "ProviderUnavailable",
    "Purpose",
    "build_llm",
    "process_daily_budget",
]
