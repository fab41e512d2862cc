"""Budgets: callers create one per build or evolution run; the client also holds a process-wide daily one.

Before each provider call the client reserves the most the call can cost (input upper bound and
``max_tokens`` at list price) on every budget involved, atomically; a budget that cannot cover it raises
BudgetExceeded and nothing is sent. After the call the reservation is settled to the real cost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from tdev_common.llm.errors import BudgetExceeded

# One lock for all budgets: a reservation touches several and must be all-or-nothing.
_LOCK = threading.Lock()
_EPSILON = 1e-12


@dataclass(frozen=True)
class BudgetUsage:
    """What was consumed under a budget (settled calls only)."""

    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    models: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class Budget:
    """A cap on LLM spend (US dollars) and/or tokens for one build, evolution run or other unit of work."""

    def __init__(self, name: str, *, max_cost_usd: float | None = None, max_tokens: int | None = None) -> None:
        if max_cost_usd is not None and max_cost_usd < 0:
            raise ValueError("max_cost_usd must be >= 0")
        if max_tokens is not None and max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        self.name = name
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        self._reserved_usd = 0.0
        self._reserved_tokens = 0
        self._usage = BudgetUsage()

    @property
    def spent_usd(self) -> float:
        """Settled cost so far."""
        self._roll()
        return self._usage.cost_usd

    @property
    def reserved_usd(self) -> float:
        """Cost held by calls in flight."""
        self._roll()
        return self._reserved_usd

    @property
    def remaining_usd(self) -> float | None:
        """What is left to reserve, or None without a cost cap."""
        self._roll()
        if self.max_cost_usd is None:
            return None
        return max(0.0, self.max_cost_usd - self._usage.cost_usd - self._reserved_usd)

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left to reserve, or None without a token cap."""
        self._roll()
        if self.max_tokens is None:
            return None
        return max(0, self.max_tokens - self._usage.total_tokens - self._reserved_tokens)

    @property
    def usage(self) -> BudgetUsage:
        """Settled usage so far."""
        self._roll()
        return self._usage

    def _roll(self) -> None:
        """Hook for budgets that reset (the daily one)."""

    def _period(self) -> object:
        return None

    def _shortfall(self, cost: float, tokens: int, what: str) -> BudgetExceeded | None:
        remaining_usd = self.remaining_usd
        if remaining_usd is not None and cost > remaining_usd + _EPSILON:
            return BudgetExceeded(
                f"LLM budget {self.name!r} exhausted: {what} may cost up to ${cost:.6f} but only "
                f"${remaining_usd:.6f} of ${self.max_cost_usd:.4f} is left",
                metadata={"budget": self.name, "limit_usd": f"{self.max_cost_usd}",
                          "remaining_usd": f"{remaining_usd:.6f}", "needed_usd": f"{cost:.6f}"})
        remaining_tokens = self.remaining_tokens
        if remaining_tokens is not None and tokens > remaining_tokens:
            return BudgetExceeded(
                f"LLM budget {self.name!r} exhausted: {what} may use up to {tokens} tokens but only "
                f"{remaining_tokens} of {self.max_tokens} are left",
                metadata={"budget": self.name, "limit_tokens": f"{self.max_tokens}",
                          "remaining_tokens": f"{remaining_tokens}", "needed_tokens": f"{tokens}"})
        return None

    def _hold(self, cost: float, tokens: int) -> None:
        self._reserved_usd += cost
        self._reserved_tokens += tokens

    def _unhold(self, cost: float, tokens: int, period: object) -> None:
        if period != self._period():
            return  # the hold belonged to a period that has been reset
        self._reserved_usd = max(0.0, self._reserved_usd - cost)
        self._reserved_tokens = max(0, self._reserved_tokens - tokens)

    def _record(self, cost: float, input_tokens: int, output_tokens: int, label: str | None,
                cached: bool) -> None:
        models = self._usage.models
        if label and label not in models:
            models = (*models, label)
        self._usage = replace(
            self._usage,
            calls=self._usage.calls + 1,
            cached_calls=self._usage.cached_calls + (1 if cached else 0),
            input_tokens=self._usage.input_tokens + input_tokens,
            output_tokens=self._usage.output_tokens + output_tokens,
            cost_usd=self._usage.cost_usd + cost,
            models=models,
        )

    def record_cached(self, label: str) -> None:
        """Counts a cache hit (no cost, no tokens) so usage reports show it."""
        with _LOCK:
            self._roll()
            self._record(0.0, 0, 0, label, cached=True)

    def record_external(self, cost_usd: float, label: str) -> None:
        """Counts what was spent on this budget's behalf outside its own calls (another service's LLM calls, e.g.
        an evolution run a build paid for), so later reservations see it."""
        with _LOCK:
            self._roll()
            self._record(max(0.0, cost_usd), 0, 0, label, cached=False)

    def __repr__(self) -> str:
        return (f"Budget({self.name!r}, max_cost_usd={self.max_cost_usd}, max_tokens={self.max_tokens}, "
                f"spent_usd={self._usage.cost_usd:.6f})")


class DailyBudget(Budget):
    """The process-wide cap per UTC day; resets at midnight UTC."""

    def __init__(self, max_cost_usd: float | None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__("daily", max_cost_usd=max_cost_usd)
        self._clock = clock
        self._day: date = clock().date()

    def _period(self) -> object:
        return self._day

    def _roll(self) -> None:
        today = self._clock().date()
        if today != self._day:
            self._day = today
            self._reserved_usd = 0.0
            self._reserved_tokens = 0
            self._usage = BudgetUsage()


@dataclass
class Reservation:
    """Cost and tokens held on some budgets for one call; settle or release exactly once."""

    budgets: tuple[Budget, ...]
    cost_usd: float
    tokens: int
    periods: tuple[object, ...]
    done: bool = False

    def settle(self, cost_usd: float, input_tokens: int, output_tokens: int, label: str) -> None:
        """Replaces the hold by the real usage."""
        with _LOCK:
            if self.done:
                return
            self.done = True
            for budget, period in zip(self.budgets, self.periods, strict=True):
                budget._roll()
                budget._unhold(self.cost_usd, self.tokens, period)
                budget._record(cost_usd, input_tokens, output_tokens, label, cached=False)

    def release(self) -> None:
        """Drops the hold (the call failed before the provider billed anything we know of)."""
        with _LOCK:
            if self.done:
                return
            self.done = True
            for budget, period in zip(self.budgets, self.periods, strict=True):
                budget._roll()
                budget._unhold(self.cost_usd, self.tokens, period)


def reserve(budgets: Sequence[Budget | None], cost_usd: float, tokens: int, *, what: str) -> Reservation:
    """Holds ``cost_usd`` and ``tokens`` on every budget, or on none.

    Raises:
        BudgetExceeded: the first budget that cannot cover the call, naming it and the amounts.
    """
    present = tuple(budget for budget in budgets if budget is not None)
    with _LOCK:
        for budget in present:
            budget._roll()
            shortfall = budget._shortfall(cost_usd, tokens, what)
            if shortfall is not None:
                raise shortfall
        for budget in present:
            budget._hold(cost_usd, tokens)
        return Reservation(present, cost_usd, tokens, tuple(budget._period() for budget in present))
