"""The console's pure shaping: DAG layers, code diffs and an evolution run's lineage."""

from __future__ import annotations

from typing import Any

from tdev_console.views import code_diff, dag_layers, evolution_lineage


def test_dag_layers_put_each_node_after_its_deepest_dependency() -> None:
    nodes: list[dict[str, Any]] = [{"id": "a"}, {"id": "b", "depends_on": ["a"]}, {"id": "c", "depends_on": ["a", "b"]},
             {"id": "d"}, {"id": "e", "depends_on": ["d", "c"]}]
    assert dag_layers(nodes) == [["a", "d"], ["b"], ["c"], ["e"]]


def test_dag_layers_ignore_unknown_dependencies_and_survive_a_cycle() -> None:
    assert dag_layers([{"id": "a", "depends_on": ["ghost"]}]) == [["a"]]
    layers = dag_layers([{"id": "x", "depends_on": ["y"]}, {"id": "y", "depends_on": ["x"]}])
    assert sorted(node for layer in layers for node in layer) == ["x", "y"]
    assert dag_layers([]) == []


def test_code_diff_is_a_unified_diff_of_lines() -> None:
    lines = code_diff("a\nb\n", "a\nc\n", "seed", "best")
    assert lines == ["--- seed", "+++ best", "@@ -1,2 +1,2 @@", " a", "-b", "+c"]
    assert code_diff("same", "same") == []


def test_evolution_lineage_links_best_to_its_parents_and_orders_generation_bests() -> None:
    run = {
        "seed_fitness": 0.1,
        "generations": [{"generation": 1, "best_code_hash": "h1", "best_fitness": 0.5},
                        {"generation": 2, "best_code_hash": "h1", "best_fitness": 0.5},
                        {"generation": 3, "best_code_hash": "h3", "best_fitness": 0.9}],
        "best": {"code_hash": "h3", "generation": 3, "fitness": 0.9, "operator": "crossover",
                 "parent_hashes": ["h1", "p2"]},
    }
    lineage = evolution_lineage(run, "seed")
    assert [(n["code_hash"], n["generation"], n.get("role")) for n in lineage["nodes"]] == [
        ("seed", 0, "seed"), ("h1", 1, None), ("p2", 2, None), ("h3", 3, "best")]
    assert lineage["edges"] == [{"from": "seed", "to": "h1", "kind": "succeeds"},
                                {"from": "h1", "to": "h3", "kind": "parent"},
                                {"from": "p2", "to": "h3", "kind": "parent"}]


def test_evolution_lineage_of_a_run_without_generations_is_the_seed() -> None:
    assert evolution_lineage({"generations": []}, "seed") == {
        "nodes": [{"code_hash": "seed", "generation": 0, "role": "seed"}], "edges": []}
