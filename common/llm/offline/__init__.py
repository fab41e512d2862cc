"""The offline provider: static analysis, rules and a template library; deterministic and not a model."""

from common.llm.offline.provider import EMBEDDING_MODEL, MODELS, NOT_A_MODEL, OfflineProvider
from common.llm.offline.templates import TEMPLATES

__all__ = ["EMBEDDING_MODEL", "MODELS", "NOT_A_MODEL", "TEMPLATES", "OfflineProvider"]
