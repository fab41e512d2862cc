"""Real gRPC: ListCandidates pages through every candidate a run evaluated, each naming parents that are listed
too; unknown runs are NOT_FOUND and bad paging INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import pytest
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2

from tests.evolution.conftest import Mesh, suite_message
from tests.evolution.test_grpc_lifecycle import CONSTANT, CONSTANT_SUITE, SCALER, SCALER_SUITE

pytestmark = pytest.mark.mesh  # real servers or subprocesses


async def _all_candidates(mesh: Mesh, run_id: str, page_size: int,
                          exclude_code: bool = False) -> tuple[list[evolution_pb2.Candidate], int]:
    """Every candidate page after page, and the number of pages."""
    found: list[evolution_pb2.Candidate] = []
    token, pages = "", 0
    while True:
        page = await mesh.evolution.ListCandidates(pb2.ListCandidatesRequest(
            run_id=run_id, page_size=page_size, page_token=token, exclude_code=exclude_code))
        pages += 1
        assert len(page.candidates) <= page_size
        found.extend(page.candidates)
        token = page.next_page_token
        if not token:
            return found, pages


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_list_candidates_pages_the_seed_and_every_child_with_their_parents(db_mesh: Mesh) -> None:
    mesh = db_mesh
    await mesh.register("scaler", SCALER)
    run = await mesh.start("scaler", suite_message(SCALER_SUITE), generations=3, population_size=6, islands=1,
                           elitism=1, seed=5, plateau_generations=0)
    await mesh.events(run.run_id)
    final = await mesh.get(run.run_id)
    candidates, pages = await _all_candidates(mesh, run.run_id, page_size=4)

    children = sum(report.evaluations for report in final.generations)
    assert len(candidates) == 1 + children
    assert pages == -(-len(candidates) // 4)
    keys = [(c.generation, c.code_hash) for c in candidates]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    seed = candidates[0]
    assert (seed.generation, seed.operator, seed.code, list(seed.parent_hashes)) == (0, "seed", SCALER, [])
    assert seed.fitness == final.seed_fitness
    hashes = {c.code_hash for c in candidates}
    for child in candidates[1:]:
        assert child.generation >= 1 and child.operator and child.code
        assert child.parent_hashes and set(child.parent_hashes) <= hashes, child.operator
        parents = [c for c in candidates if c.code_hash in set(child.parent_hashes)]
        assert all(parent.generation < child.generation for parent in parents)
    per_generation = {g: sum(1 for c in candidates if c.generation == g) for g in range(1, 4)}
    assert per_generation == {r.generation: r.evaluations for r in final.generations}
    assert final.best.code_hash in hashes
    assert {r.best_code_hash for r in final.generations} <= hashes
    best = next(c for c in candidates if c.code_hash == final.best.code_hash)
    assert (best.fitness, best.code, list(best.parent_hashes)) == (
        final.best.fitness, final.best.code, list(final.best.parent_hashes))

    without_code, _ = await _all_candidates(mesh, run.run_id, page_size=500, exclude_code=True)
    assert [c.code_hash for c in without_code] == [c.code_hash for c in candidates]
    assert {c.code for c in without_code} == {""}


async def test_list_candidates_of_an_unknown_run_is_not_found_and_bad_paging_is_invalid(mesh: Mesh) -> None:
    error = await _error(mesh.evolution.ListCandidates(pb2.ListCandidatesRequest(run_id="evo_000000000000")))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, 'unknown evolution run "evo_000000000000"')
    error = await _error(mesh.evolution.ListCandidates(pb2.ListCandidatesRequest()))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "run_id: is required")

    await mesh.register("constant", CONSTANT)
    await mesh.register("scaler", SCALER)
    # Seeded: the constant program has few distinct variants, and an unlucky draw made only duplicates of the seed
    # (one candidate, no second page); seed 1 makes new children.
    first = await mesh.start("constant", suite_message(CONSTANT_SUITE), generations=1, population_size=4, islands=1,
                             seed=1)
    second = await mesh.start("scaler", suite_message(SCALER_SUITE), generations=1, population_size=4, islands=1,
                              seed=1)
    for run in (first, second):
        await mesh.events(run.run_id)
    page = await mesh.evolution.ListCandidates(pb2.ListCandidatesRequest(run_id=first.run_id, page_size=1))
    assert len(page.candidates) == 1 and page.next_page_token

    garbage = await _error(mesh.evolution.ListCandidates(
        pb2.ListCandidatesRequest(run_id=first.run_id, page_token="garbage")))
    assert (garbage.code(), garbage.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "page_token: is malformed; pass a next_page_token exactly as received")
    other_run = await _error(mesh.evolution.ListCandidates(
        pb2.ListCandidatesRequest(run_id=second.run_id, page_token=page.next_page_token)))
    assert other_run.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert other_run.details() == (
        "page_token: was issued for a different query; keep filters and order when paging")
    other_shape = await _error(mesh.evolution.ListCandidates(
        pb2.ListCandidatesRequest(run_id=first.run_id, page_token=page.next_page_token, exclude_code=True)))
    assert other_shape.code() == grpc.StatusCode.INVALID_ARGUMENT
    negative = await _error(mesh.evolution.ListCandidates(
        pb2.ListCandidatesRequest(run_id=first.run_id, page_size=-1)))
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
