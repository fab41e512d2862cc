"""Selection as pure functions over candidates with a seeded ``random.Random``: ranking, tournament, elites."""

from __future__ import annotations

import random
from collections.abc import Sequence

from evolution_svc.domain import Candidate


def rank_key(candidate: Candidate) -> tuple[float, int, str]:
    """Sort key, best first: higher fitness, then smaller program, then code hash (a stable tie-break)."""
    return (-candidate.fitness, candidate.size, candidate.code_hash)


def ranked(population: Sequence[Candidate]) -> list[Candidate]:
    """The population best first."""
    return sorted(population, key=rank_key)


def best(population: Sequence[Candidate]) -> Candidate:
    """The best candidate.

    Raises:
        ValueError: for an empty population.
    """
    if not population:
        raise ValueError("empty population")
    return min(population, key=rank_key)


def tournament(population: Sequence[Candidate], size: int, rng: random.Random) -> Candidate:
    """The best of ``size`` candidates drawn uniformly (with replacement).

    Raises:
        ValueError: for an empty population.
    """
    if not population:
        raise ValueError("empty population")
    contestants = [population[rng.randrange(len(population))] for _ in range(max(1, size))]
    return min(contestants, key=rank_key)


def elites(population: Sequence[Candidate], count: int) -> tuple[Candidate, ...]:
    """The ``count`` best distinct programs (by normalised AST)."""
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for candidate in ranked(population):
        if len(chosen) >= count:
            break
        if candidate.ast_hash not in seen:
            seen.add(candidate.ast_hash)
            chosen.append(candidate)
    return tuple(chosen)
