"""A circuit breaker per provider: stop calling a provider that keeps failing, try again later."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import structlog

from tdev_common.llm.errors import CircuitOpen

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    """closed: calls flow; open: calls refused; half_open: one trial call decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures; half-opens after ``reset_seconds``."""

    def __init__(self, name: str, *, threshold: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._threshold = threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its reset time reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._reset_seconds:
            return BreakerState.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Admits a call or raises CircuitOpen (no request is sent)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = True
            return
        wait = max(0.0, self._reset_seconds - (self._clock() - self._opened_at))
        raise CircuitOpen(f"LLM provider {self.name} is failing; circuit open, next trial in {wait:.1f}s",
                          metadata={"provider": self.name})

    def record_success(self) -> None:
        """A call succeeded: close."""
        if self._state is not BreakerState.CLOSED:
            log.info("llm_breaker_closed", provider=self.name)
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        """A transient failure: count it; open at the threshold or when the half-open trial fails."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            if self._state is not BreakerState.OPEN:
                log.warning("llm_breaker_opened", provider=self.name, failures=self._failures)
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def record_neutral(self) -> None:
        """A call ended in a way that says nothing about the provider's health (e.g. a 400)."""
        self._trial_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self.record_success()
