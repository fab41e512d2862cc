"""Retries of one provider call: exponential backoff with jitter, Retry-After honoured, breaker consulted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tdev_common.llm.breaker import CircuitBreaker
from tdev_common.llm.errors import ProviderCallError, TransientProviderError

log = structlog.get_logger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried."""

    max_attempts: int = 4
    initial_seconds: float = 1.0
    max_seconds: float = 30.0
    multiplier: float = 2.0
    jitter_seconds: float = 1.0
    retry_after_max_seconds: float = 60.0


class _Wait:
    """Retry-After when the server sent one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = wait_exponential_jitter(multiplier=policy.initial_seconds, max=policy.max_seconds,
                                                exp_base=policy.multiplier, jitter=policy.jitter_seconds)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ProviderCallError) and error.retry_after is not None:
            return max(0.0, error.retry_after)
        return float(self._backoff(state))


async def call_with_retries(attempt: Callable[[], Awaitable[T]], *, policy: RetryPolicy,
                            breaker: CircuitBreaker, sleep: Sleep, what: str) -> T:
    """Runs ``attempt`` until it succeeds, fails permanently, or the attempts are used up.

    Raises:
        CircuitOpen: before an attempt, when the provider's breaker is open.
        TransientProviderError: the last transient failure, when attempts ran out or Retry-After was
            longer than ``retry_after_max_seconds``.
        PermanentProviderError: at once, on a non-retryable failure.
    """

    def retryable(error: BaseException) -> bool:
        if not isinstance(error, TransientProviderError):
            return False
        return error.retry_after is None or error.retry_after <= policy.retry_after_max_seconds

    async def guarded() -> T:
        breaker.before_call()
        try:
            result = await attempt()
        except TransientProviderError:
            breaker.record_failure()
            raise
        except ProviderCallError:
            breaker.record_neutral()
            raise
        except BaseException:
            breaker.record_neutral()
            raise
        breaker.record_success()
        return result

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("llm_retry", call=what, attempt=state.attempt_number,
                    status=getattr(error, "status", None), error=type(error).__name__,
                    wait_seconds=round(state.upcoming_sleep, 3))

    retrying = AsyncRetrying(stop=stop_after_attempt(policy.max_attempts), wait=_Wait(policy),
                             retry=retry_if_exception(retryable), reraise=True, sleep=sleep,
                             before_sleep=before_sleep)
    return await retrying(guarded)
