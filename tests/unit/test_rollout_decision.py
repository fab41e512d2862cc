"""The registry's canary judgement: success-rate drop, then a slower median by both a ratio and a margin."""

from __future__ import annotations

import pytest

from registry_svc.aliases import decide, effective_policy
from registry_svc.domain import RolloutPolicy, VersionStats

pytestmark = pytest.mark.unit

POLICY = effective_policy(RolloutPolicy(min_sample=4))


def stats(version: str, median_ms: float, success_rate: float = 1.0, executions: int = 4) -> VersionStats:
    return VersionStats(version, executions, success_rate, median_ms)


def test_nothing_is_decided_before_both_sides_have_their_sample() -> None:
    assert decide(stats("1.0.0", 3.0, executions=3), stats("1.1.0", 3.0), POLICY) is None
    assert decide(stats("1.0.0", 3.0), stats("1.1.0", 3.0, executions=3), POLICY) is None


def test_a_few_milliseconds_more_on_a_fast_agent_is_not_slower() -> None:
    # 1.6x stable's median, but only 1.8 ms more: within the default 5 ms margin.
    promote, why = decide(stats("1.0.0", 2.8), stats("1.1.0", 4.6), POLICY) or (None, "")
    assert promote is True and why.startswith("as good as stable")


def test_a_canary_slower_by_the_ratio_and_the_margin_is_rolled_back() -> None:
    promote, why = decide(stats("1.0.0", 2.8), stats("1.1.0", 60.0), POLICY) or (None, "")
    assert promote is False
    assert why.startswith("median duration 21.43x stable's, 57.2 ms more (limits 1.5x and 5 ms)")


def test_a_large_increase_within_the_ratio_is_promoted() -> None:
    promote, _ = decide(stats("1.0.0", 400.0), stats("1.1.0", 560.0), POLICY) or (None, "")
    assert promote is True  # 160 ms more, but only 1.4x


def test_a_small_margin_makes_the_ratio_alone_decide() -> None:
    strict = effective_policy(RolloutPolicy(min_sample=4, min_latency_increase_ms=0.001))
    promote, why = decide(stats("1.0.0", 2.8), stats("1.1.0", 4.6), strict) or (None, "")
    assert promote is False and "limits 1.5x and 0.001 ms" in why


def test_a_success_rate_drop_is_judged_before_speed() -> None:
    promote, why = decide(stats("1.0.0", 50.0), stats("1.1.0", 1.0, success_rate=0.5), POLICY) or (None, "")
    assert promote is False and why.startswith("success rate 50.0% below stable")


def test_unset_fields_take_their_defaults() -> None:
    assert effective_policy(None) == RolloutPolicy(20, 0.05, 1.5, 5.0)
    assert effective_policy(RolloutPolicy(0, 0.0, 0.0, 2.5)).min_latency_increase_ms == 2.5
