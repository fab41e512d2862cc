"""Islands as pure functions: how a population is split, and ring migration between sub-populations."""

from __future__ import annotations

from evolution_svc.domain import Candidate
from evolution_svc.selection import elites, ranked

Islands = tuple[tuple[Candidate, ...], ...]


def island_sizes(population_size: int, islands: int) -> tuple[int, ...]:
    """Sizes of the islands: as even as possible, the first ones one larger."""
    base, extra = divmod(population_size, islands)
    return tuple(base + (1 if index < extra else 0) for index in range(islands))


def is_migration_generation(generation: int, interval: int, islands: int) -> bool:
    """Whether migration happens after ``generation`` (never with one island or interval 0)."""
    return islands > 1 and interval > 0 and generation > 0 and generation % interval == 0


def migrate(islands: Islands, count: int) -> Islands:
    """Ring migration: each island's ``count`` best replace the worst of the next island.

    Emigrants the receiving island already holds (same normalised AST) are not sent twice.
    """
    if len(islands) < 2 or count <= 0:
        return islands
    emigrants = [elites(island, count) for island in islands]
    result: list[tuple[Candidate, ...]] = []
    for index, island in enumerate(islands):
        incoming = emigrants[index - 1]
        present = {candidate.ast_hash for candidate in island}
        newcomers = [candidate for candidate in incoming if candidate.ast_hash not in present]
        newcomers = newcomers[: max(0, len(island) - 1)]
        keep = ranked(island)[: len(island) - len(newcomers)]
        result.append((*keep, *newcomers))
    return tuple(result)
