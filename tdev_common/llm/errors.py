"""Errors of the LLM layer: typed DomainErrors for callers, and the provider-call errors retries key on."""

from __future__ import annotations

from tdev_common.errors import DomainError, FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable


class BudgetExceeded(ResourceExhausted):
    """A per-build, per-run or daily LLM budget cannot cover the call; nothing was sent."""

    reason = "LLM_BUDGET_EXHAUSTED"


class ProviderUnavailable(Unavailable):
    """A provider could not answer: retries used up, timeouts, or its circuit breaker is open."""

    reason = "LLM_PROVIDER_UNAVAILABLE"


class CircuitOpen(ProviderUnavailable):
    """The provider failed repeatedly; calls are refused until its breaker half-opens."""

    reason = "LLM_CIRCUIT_OPEN"


class ProviderRejected(FailedPrecondition):
    """A provider refused the request with a non-retryable 4xx (bad key, bad request, unknown model)."""

    reason = "LLM_PROVIDER_REJECTED"


class InvalidModelOutput(Unavailable):
    """The model's answer was not valid JSON for the schema, even after the repair round.

    UNAVAILABLE because the dependency failed to deliver a usable answer; a later attempt may succeed.
    """

    reason = "LLM_INVALID_OUTPUT"


class NoProviderConfigured(FailedPrecondition):
    """No configured provider can serve the request (no key, or the route names none that is configured)."""

    reason = "LLM_NOT_CONFIGURED"


class EmbeddingsUnsupported(FailedPrecondition):
    """The provider (or every provider on the embeddings route) offers no embeddings."""

    reason = "LLM_NO_EMBEDDINGS"


class OfflineUnsupported(FailedPrecondition):
    """The offline provider has no rule or template for this input; the message lists what it supports."""

    reason = "LLM_OFFLINE_UNSUPPORTED"


class BadPayload(InvalidArgument):
    """A prompt lacks the machine-readable payload the offline provider reads (see tdev_common.llm.prompts)."""

    reason = "LLM_BAD_PAYLOAD"


class ProviderCallError(Exception):
    """One failed attempt at a provider; the retry loop and breaker look at ``retryable``.

    The message never holds keys: providers build it from the status code and a redacted server message.
    """

    retryable = False

    def __init__(self, provider: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.status = status
        self.retry_after = retry_after


class TransientProviderError(ProviderCallError):
    """429, 5xx, connection error or timeout: worth another attempt."""

    retryable = True


class ProviderTimeout(TransientProviderError):
    """The call did not finish within the per-call timeout."""


class PermanentProviderError(ProviderCallError):
    """Any other 4xx, or an answer the SDK could not read: retrying would not help."""


__all__ = [
    "BadPayload",
    "BudgetExceeded",
    "CircuitOpen",
    "DomainError",
    "EmbeddingsUnsupported",
    "InvalidModelOutput",
    "NoProviderConfigured",
    "OfflineUnsupported",
    "PermanentProviderError",
    "ProviderCallError",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "TransientProviderError",
]
