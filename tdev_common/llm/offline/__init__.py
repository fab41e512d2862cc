"""The offline provider: static analysis, rules and a template library; deterministic and not a model."""

from tdev_common.llm.offline.provider import EMBEDDING_MODEL, MODELS, NOT_A_MODEL, OfflineProvider
from tdev_common.llm.offline.templates import TEMPLATES

__all__ = ["EMBEDDING_MODEL", "MODELS", "NOT_A_MODEL", "TEMPLATES", "OfflineProvider"]
