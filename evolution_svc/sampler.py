"""The sampler: decides, with the run's seeded ``random.Random``, how each child is made.

A child plan names its parents (tournament winners, sometimes an archive elite), the operator steps
(crossover with probability ``crossover_rate``, then mutation with probability ``mutation_rate``) and a
seed for the operators' own randomness, so operators may run concurrently and the run stays reproducible.
A draw with neither crossover nor mutation would be a plain copy, which the duplicate check would drop
anyway, so the sampler says so (None) instead of planning it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from evolution_svc import bandit
from evolution_svc.archive import Archive, sample
from evolution_svc.domain import Candidate, EvolutionConfig, OperatorStat
from evolution_svc.selection import select
from evolution_svc.synthesis import SYNTHESIS_OPERATORS
from evolution_svc.transforms import CROSSOVER_SUBTREE, MUTATION_OPERATORS

LLM_DIFF = "llm:diff"
LLM_CROSSOVER = "llm:crossover"
LLM_OPERATORS = frozenset({LLM_DIFF, LLM_CROSSOVER})
# In a mixed run, the share of variation steps given to the model.
LLM_SHARE = 0.5
# The mutations a synthesis run's bandit chooses among: the transforms and the synthesis operators.
BANDIT_OPERATORS: tuple[str, ...] = (*MUTATION_OPERATORS, *SYNTHESIS_OPERATORS)
# In a synthesis run, the chance that a mutated child gets a second mutation.
SECOND_MUTATION = 0.3
# In a synthesis run, the share of first parents that are the seed program itself: a repair is usually a
# small edit of the original, and a population that drifted on near misses can lose that neighbourhood.
SEED_PARENT = 0.8


@dataclass(frozen=True)
class ChildPlan:
    """How to make one child."""

    island: int
    parents: tuple[Candidate, ...]
    steps: tuple[str, ...]
    donors: tuple[str, ...]
    seed: int

    @property
    def operator(self) -> str:
        """The operator label stored on the child, e.g. ``crossover:subtree+mutate:constant``."""
        return "+".join(self.steps)

    @property
    def uses_llm(self) -> bool:
        """Whether any step calls the model."""
        return any(step in LLM_OPERATORS for step in self.steps)


def _choose(ast_operator: str, llm_operator: str, config: EvolutionConfig, llm_allowed: bool,
            rng: random.Random) -> str | None:
    if config.uses_transforms and config.uses_llm:
        use_llm = rng.random() < LLM_SHARE
        return llm_operator if use_llm and llm_allowed else ast_operator
    if config.uses_llm:
        return llm_operator if llm_allowed else None
    return ast_operator


def plan_child(
    island_index: int,
    island: Sequence[Candidate],
    archive: Archive,
    config: EvolutionConfig,
    rng: random.Random,
    *,
    archive_rate: float,
    llm_allowed: bool,
    operator_stats: Sequence[OperatorStat] = (),
    seed: Candidate | None = None,
) -> ChildPlan | None:
    """One child plan, or None for a draw that would copy its parent (or needs a model it may not call).

    Parents come from the run's selection method; with synthesis on, the mutation is drawn by the
    bandit's weights (``operator_stats``), otherwise uniformly among the transforms.
    """
    crossover = rng.random() < config.crossover_rate
    mutation = rng.random() < config.mutation_rate
    if not crossover and not mutation:
        return None
    elite = sample(archive, rng) if rng.random() < archive_rate else None
    if config.synthesis and seed is not None and elite is None and rng.random() < SEED_PARENT:
        elite = seed
    first = elite or select(island, config, rng)
    parents: tuple[Candidate, ...] = (first,)
    steps: list[str] = []
    if crossover:
        second = select(island, config, rng)
        operator = _choose(CROSSOVER_SUBTREE, LLM_CROSSOVER, config, llm_allowed, rng)
        if operator is None:
            return None
        parents = (first, second)
        steps.append(operator)
    if mutation:
        drawn = (
            bandit.draw(operator_stats, rng)
            if config.synthesis and operator_stats
            else rng.choice(MUTATION_OPERATORS)
        )
        operator = _choose(drawn, LLM_DIFF, config, llm_allowed, rng)
        if operator is None:
            return None
        steps.append(operator)
        # Repairs often need two edits at once (a guard and its value); neither alone may score better.
        if config.synthesis and operator_stats and rng.random() < SECOND_MUTATION:
            steps.append(bandit.draw(operator_stats, rng))
    donor = island[rng.randrange(len(island))]
    donors = tuple(dict.fromkeys(candidate.code for candidate in (*parents[1:], donor)))
    return ChildPlan(island_index, parents, tuple(steps), donors, rng.getrandbits(64))
