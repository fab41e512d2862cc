"""A MAP-Elites archive as a pure value: the best candidate per cell of a behaviour-descriptor grid.

The descriptor of a candidate is (correctness decile, size bin relative to the seed): programs that pass
different amounts of the suite, or solve it with much smaller or larger code, keep a place of their own
even when they would lose a tournament, and the sampler draws parents from here for diversity.

With lexicase selection the descriptor is the candidate's per-case pass vector instead (which training
cases it passes, as a bit mask, plus the size bin): two programs that pass the same number of cases but
different ones are different behaviours and both keep a place. The pass-vector grid is unbounded, so at
most ``PASS_VECTOR_CELLS`` cells are kept (the worst elite's cell is dropped first).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from evolution_svc.domain import Candidate
from evolution_svc.selection import rank_key

CORRECTNESS_BINS = 10
SIZE_BINS = 8

PASS_VECTOR_CELLS = 64

Descriptor = tuple[int, ...]


def descriptor(candidate: Candidate, reference_size: int) -> Descriptor:
    """The candidate's cell: correctness in tenths (0..10) and log-size relative to the seed (0..7)."""
    correctness_bin = min(CORRECTNESS_BINS, int(candidate.correctness * CORRECTNESS_BINS + 1e-9))
    ratio = max(candidate.size, 1) / max(reference_size, 1)
    size_bin = round(math.log2(ratio) * 2) + SIZE_BINS // 2
    return correctness_bin, min(SIZE_BINS - 1, max(0, size_bin))


def pass_vector_descriptor(candidate: Candidate, reference_size: int) -> Descriptor:
    """The candidate's cell by behaviour: the bit mask of training cases passed, and the size bin."""
    mask = sum(1 << index for index, score in enumerate(candidate.case_scores) if score >= 1.0)
    return mask, descriptor(candidate, reference_size)[1]


@dataclass(frozen=True)
class Archive:
    """Occupied cells, sorted by descriptor."""

    cells: tuple[tuple[Descriptor, Candidate], ...] = ()

    def __len__(self) -> int:
        return len(self.cells)

    def get(self, cell: Descriptor) -> Candidate | None:
        """The elite of a cell, if any."""
        return next((candidate for key, candidate in self.cells if key == cell), None)


def insert(archive: Archive, candidate: Candidate, reference_size: int, *, by_cases: bool = False) -> Archive:
    """The archive with ``candidate`` placed in its cell if the cell is empty or it beats the elite.

    Programs that pass nothing are never archived: they are no behaviour worth keeping. ``by_cases``
    keys cells on pass vectors (lexicase runs).
    """
    if candidate.fitness <= 0:
        return archive
    cell = pass_vector_descriptor(candidate, reference_size) if by_cases else descriptor(candidate, reference_size)
    current = archive.get(cell)
    if current is not None and rank_key(current) <= rank_key(candidate):
        return archive
    cells = {key: value for key, value in archive.cells}
    cells[cell] = candidate
    if by_cases and len(cells) > PASS_VECTOR_CELLS:
        worst = max(cells, key=lambda key: (rank_key(cells[key]), key))
        del cells[worst]
    return Archive(tuple(sorted(cells.items(), key=lambda item: item[0])))


def sample(archive: Archive, rng: random.Random) -> Candidate | None:
    """A uniformly drawn elite (uniform over cells, which is what gives rare behaviours a chance)."""
    if not archive.cells:
        return None
    return archive.cells[rng.randrange(len(archive.cells))][1]
