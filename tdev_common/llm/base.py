"""The LLM interface: messages, purposes, the Completion result and what a provider implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


class Purpose(StrEnum):
    """Why a service calls a model; routing, budgets and the offline provider key on it."""

    ANALYSIS = "analysis"
    REQUIREMENTS = "requirements"
    CODE_GENERATION = "code_generation"
    CODE_REPAIR = "code_repair"
    MUTATION = "mutation"
    REVIEW = "review"


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> Message:
        """A system message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user message."""
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        """An assistant message."""
        return cls("assistant", content)

    def as_dict(self) -> dict[str, str]:
        """The wire form ``{"role": ..., "content": ...}``."""
        return {"role": self.role, "content": self.content}


MessageLike = Message | Mapping[str, str]


def normalise_messages(messages: Sequence[MessageLike]) -> tuple[Message, ...]:
    """Accepts Message objects or ``{"role", "content"}`` mappings; raises ValueError on anything else."""
    result: list[Message] = []
    for index, item in enumerate(messages):
        if isinstance(item, Message):
            result.append(item)
            continue
        role, content = item.get("role"), item.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(f"messages[{index}]: needs role system|user|assistant and string content")
        result.append(Message(role, content))  # type: ignore[arg-type]
    if not any(message.role == "user" for message in result):
        raise ValueError("messages: at least one user message is required")
    return tuple(result)


@dataclass(frozen=True)
class Disagreement:
    """Where two ensemble members answered differently."""

    path: str
    values: dict[str, Any]
    resolution: str


@dataclass(frozen=True)
class EnsembleReport:
    """How an ensemble answer was made: its members and where they disagreed."""

    members: tuple[Completion, ...]
    failed: dict[str, str]
    disagreements: tuple[Disagreement, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (members by provider/model, failures, disagreements)."""
        return {
            "members": [f"{m.provider}/{m.model}" for m in self.members],
            "failed": dict(self.failed),
            "disagreements": [
                {"path": d.path, "values": d.values, "resolution": d.resolution} for d in self.disagreements
            ],
        }


@dataclass(frozen=True)
class Completion:
    """The result of one ``complete()`` call.

    ``data`` holds the parsed, schema-valid JSON when a schema was given. ``cost_usd`` and the token counts
    are what this call consumed (0 for cache hits and the offline provider). ``is_model`` is False for the
    offline provider, whose ``model`` always ends with ``(not a model)``.
    """

    text: str
    data: Any
    provider: str
    model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool = False
    is_model: bool = True
    repaired: bool = False
    fallbacks: tuple[str, ...] = ()
    ensemble: EnsembleReport | None = None

    @property
    def label(self) -> str:
        """``provider/model`` as shown in usage reports, e.g. ``offline/static-analyzer (not a model)``."""
        return self.model if self.model.startswith(f"{self.provider}/") else f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Embeddings:
    """The result of one ``embed()`` call: one vector per input text, in order."""

    vectors: tuple[tuple[float, ...], ...]
    provider: str
    model: str
    input_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool = False
    cached_count: int = 0
    is_model: bool = True


@dataclass(frozen=True)
class ProviderRequest:
    """What the client hands a provider for one call (the schema is advisory: the client validates)."""

    messages: tuple[Message, ...]
    model: str
    max_tokens: int
    temperature: float
    purpose: str
    schema: Mapping[str, Any] | None = None
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class ProviderReply:
    """What a provider returns for one call."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str
    finish_reason: str | None = None
    data: Any = None


@dataclass(frozen=True)
class EmbeddingReply:
    """What a provider returns for one embeddings call."""

    vectors: tuple[tuple[float, ...], ...]
    input_tokens: int
    model: str


@dataclass(frozen=True)
class ProviderInfo:
    """A configured provider, as services see it."""

    name: str
    is_model: bool
    default_model: str
    embeddings: bool
    base_url: str | None = None
    models: tuple[str, ...] = field(default_factory=tuple)


class Provider(Protocol):
    """A source of completions; raises tdev_common.llm.errors.ProviderCallError subclasses on failure."""

    name: str
    is_model: bool
    supports_embeddings: bool

    def default_model(self, purpose: str) -> str:
        """The model used for a purpose when routing names none."""
        ...

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """One call, no retries (the client retries)."""
        ...

    async def embed(self, texts: Sequence[str], model: str, timeout_seconds: float) -> EmbeddingReply:
        """Embeddings for texts; raises EmbeddingsUnsupported when the provider has none."""
        ...

    def info(self) -> ProviderInfo:
        """What this provider is, for services asking what is configured."""
        ...

    async def close(self) -> None:
        """Releases connections."""
        ...
