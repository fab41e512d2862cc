"""Operator weights from recent success: a decayed success-rate bandit over the mutation operators.

Each generation, an operator's uses and successes (children fitter than their first parent) are added to
its decayed counts; its weight for the next generation is a floor share for exploration plus a share in
proportion to its smoothed success rate ``(successes + 1) / (uses + 2)``. Pure functions over tuples, so
the state is part of the checkpoint and a resumed run draws the same operators.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from evolution_svc.domain import OperatorStat

DECAY = 0.7
# Every operator keeps at least this share of the draws spread evenly, so a cold one can come back.
EXPLORATION = 0.2
DIGITS = 6


def _weights(uses: Sequence[float], successes: Sequence[float]) -> list[float]:
    rates = [(won + 1.0) / (used + 2.0) for used, won in zip(uses, successes, strict=True)]
    total = sum(rates)
    share = EXPLORATION / len(rates)
    return [round(share + (1 - EXPLORATION) * rate / total, DIGITS) for rate in rates]


def initial(operators: Sequence[str]) -> tuple[OperatorStat, ...]:
    """Equal weights, no history."""
    weights = _weights([0.0] * len(operators), [0.0] * len(operators))
    return tuple(OperatorStat(name, 0.0, 0.0, weight) for name, weight in zip(operators, weights, strict=True))


def update(stats: Sequence[OperatorStat], outcomes: Iterable[tuple[str, bool]]) -> tuple[OperatorStat, ...]:
    """The stats after one generation's outcomes ``(operator, improved)``; unknown operators are ignored."""
    index = {stat.operator: position for position, stat in enumerate(stats)}
    uses = [stat.uses * DECAY for stat in stats]
    successes = [stat.successes * DECAY for stat in stats]
    for operator, improved in outcomes:
        position = index.get(operator)
        if position is None:
            continue
        uses[position] += 1
        successes[position] += float(improved)
    weights = _weights(uses, successes)
    return tuple(
        OperatorStat(stat.operator, round(used, DIGITS), round(won, DIGITS), weight)
        for stat, used, won, weight in zip(stats, uses, successes, weights, strict=True)
    )


def draw(stats: Sequence[OperatorStat], rng: random.Random) -> str:
    """An operator drawn in proportion to its weight.

    Raises:
        ValueError: for empty stats.
    """
    if not stats:
        raise ValueError("no operators")
    point = rng.random() * sum(stat.weight for stat in stats)
    for stat in stats:
        point -= stat.weight
        if point < 0:
            return stat.operator
    return stats[-1].operator
