"""The program database: the engine's whole state as one value, and the pure steps that advance it.

``EngineState`` is what a checkpoint stores: islands, archive, every normalised-AST hash evaluated so far
(the duplicate check), best-ever candidate, history, budget counters and the random generator's state.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from evolution_svc import bandit
from evolution_svc.archive import Archive, insert
from evolution_svc.domain import Candidate, EvaluationLimits, EvolutionConfig, GenerationReport, OperatorStat
from evolution_svc.fitness import DIGITS, FitnessBasis
from evolution_svc.islands import Islands, is_migration_generation, migrate
from evolution_svc.sampler import BANDIT_OPERATORS
from evolution_svc.selection import best, rank_key, tournament

RngState = tuple[int, tuple[int, ...], float | None]


@dataclass(frozen=True)
class Totals:
    """Budget counters since the start of the run (across restarts)."""

    evaluations: int = 0
    cache_hits: int = 0
    cost_usd: float = 0.0
    elapsed_seconds: float = 0.0


@dataclass(frozen=True)
class EngineState:
    """Everything needed to continue a run after its last finished generation."""

    generation: int
    islands: Islands
    archive: Archive
    seen: frozenset[str]
    seed: Candidate
    best: Candidate
    history: tuple[float, ...]
    stagnant: int
    totals: Totals
    rng_state: RngState
    basis: FitnessBasis
    limits: EvaluationLimits
    # The operator bandit's decayed counts and weights (synthesis runs only).
    operator_stats: tuple[OperatorStat, ...] = ()
    # The candidates first evaluated in the step that made this state (the seed for generation 0). Not part of
    # a checkpoint (nor of equality): they are stored with that step's event, so a decoded state has none.
    born: tuple[Candidate, ...] = field(default=(), compare=False)

    @property
    def members(self) -> tuple[Candidate, ...]:
        """Every member of every island."""
        return tuple(candidate for island in self.islands for candidate in island)


def initial_state(
    seed: Candidate,
    config: EvolutionConfig,
    basis: FitnessBasis,
    totals: Totals,
    limits: EvaluationLimits | None = None,
) -> EngineState:
    """Generation 0: every island holds the seed program."""
    rng = random.Random(config.seed)
    return EngineState(
        generation=0,
        islands=tuple((seed,) for _ in range(config.islands)),
        archive=insert(Archive(), seed, basis.reference_size, by_cases=config.selection.is_lexicase),
        seen=frozenset({seed.ast_hash}),
        seed=seed,
        best=seed,
        history=(seed.fitness,),
        stagnant=0,
        totals=totals,
        rng_state=rng.getstate(),  # type: ignore[arg-type]
        basis=basis,
        limits=limits or EvaluationLimits(),
        operator_stats=bandit.initial(BANDIT_OPERATORS) if config.synthesis else (),
        born=(seed,),
    )


def next_island(
    previous: Sequence[Candidate],
    kept: Sequence[Candidate],
    children: Sequence[Candidate],
    size: int,
    tournament_size: int,
    rng: random.Random,
) -> tuple[Candidate, ...]:
    """Elites, then children, then tournament survivors of the previous island until ``size`` is reached."""
    island = [*kept, *children][:size]
    while len(island) < size:
        island.append(tournament(previous, tournament_size, rng))
    return tuple(island)


def relative(value: float, reference: float) -> float:
    """(value - reference) / max(reference, 1e-9), rounded."""
    return round((value - reference) / max(reference, 1e-9), DIGITS)


@dataclass(frozen=True)
class GenerationWork:
    """What one generation produced, before it is folded into the state."""

    islands: Islands
    children: tuple[Candidate, ...]
    evaluations: int
    cache_hits: int
    duplicates_skipped: int
    cost_usd: float
    duration_seconds: float
    # (mutation operator, child fitter than its first parent) per evaluated child: the bandit's rewards.
    outcomes: tuple[tuple[str, bool], ...] = ()


def advance(
    state: EngineState, work: GenerationWork, config: EvolutionConfig, rng: random.Random
) -> tuple[EngineState, GenerationReport]:
    """Folds a finished generation into the state (migration, archive, best, history) and reports it."""
    generation = state.generation + 1
    islands = work.islands
    if is_migration_generation(generation, config.migration_interval, len(islands)):
        islands = migrate(islands, config.migration_size)
    archive = state.archive
    for child in work.children:
        archive = insert(archive, child, state.basis.reference_size, by_cases=config.selection.is_lexicase)
    members = [candidate for island in islands for candidate in island]
    population_best = best(members)
    best_ever = min((state.best, population_best), key=rank_key)
    improved = best_ever.fitness > state.best.fitness + 1e-12
    totals = Totals(
        evaluations=state.totals.evaluations + work.evaluations,
        cache_hits=state.totals.cache_hits + work.cache_hits,
        cost_usd=round(state.totals.cost_usd + work.cost_usd, DIGITS),
        elapsed_seconds=state.totals.elapsed_seconds + work.duration_seconds,
    )
    fitnesses = [candidate.fitness for candidate in members]
    stats = bandit.update(state.operator_stats, work.outcomes) if state.operator_stats else ()
    report = GenerationReport(
        generation=generation,
        best_fitness=population_best.fitness,
        mean_fitness=round(statistics.fmean(fitnesses), DIGITS),
        median_fitness=round(statistics.median(fitnesses), DIGITS),
        improvement_over_seed=relative(population_best.fitness, state.seed.fitness),
        improvement_over_previous=relative(population_best.fitness, state.history[-1]),
        diversity=round(len({candidate.ast_hash for candidate in members}) / len(members), DIGITS),
        evaluations=work.evaluations,
        cache_hits=work.cache_hits,
        duplicates_skipped=work.duplicates_skipped,
        cost_usd=round(work.cost_usd, DIGITS),
        duration_ms=round(work.duration_seconds * 1000, 3),
        archive_size=len(archive),
        best_code_hash=population_best.code_hash,
        best_correctness=population_best.correctness,
        total_evaluations=totals.evaluations,
        selection=config.selection.value,
        operator_stats=stats,
    )
    new_state = replace(
        state,
        generation=generation,
        islands=islands,
        archive=archive,
        seen=state.seen | {child.ast_hash for child in work.children},
        best=best_ever,
        history=(*state.history, population_best.fitness),
        stagnant=0 if improved else state.stagnant + 1,
        totals=totals,
        rng_state=rng.getstate(),  # type: ignore[arg-type]
        operator_stats=stats,
        born=work.children,
    )
    return new_state, report
