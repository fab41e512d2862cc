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


def _candidate(code_hash: str, generation: int, code: str, *parents: str, fitness: float = 0.5) -> dict[str, object]:
    return {"code_hash": code_hash, "generation": generation, "code": code, "fitness": fitness,
            "operator": "seed" if not parents else "mutate:constant", "parent_hashes": list(parents)}


def test_evolution_lineage_is_the_parent_child_tree_with_each_childs_diff_against_its_first_parent() -> None:
    candidates = [_candidate("seed", 0, "a\nb", fitness=0.1), _candidate("c1", 1, "a\nc", "seed"),
                  _candidate("c2", 1, "x", "seed"), _candidate("c3", 2, "a\nd", "c1", "c2", fitness=0.9)]
    run = {"best": {"code_hash": "c3", "generation": 2}}
    lineage = evolution_lineage(run, "seed", candidates)
    nodes = {n["code_hash"]: n for n in lineage["nodes"]}
    assert [n["code_hash"] for n in lineage["nodes"]] == ["seed", "c1", "c2", "c3"]
    assert lineage["edges"] == [{"from": "seed", "to": "c1"}, {"from": "seed", "to": "c2"},
                                {"from": "c1", "to": "c3"}, {"from": "c2", "to": "c3"}]
    assert (nodes["seed"]["role"], nodes["c3"]["role"], nodes["c1"]["role"]) == ("seed", "best", "")
    assert "diff" not in nodes["seed"]
    assert nodes["c3"]["diff_from"] == "c1"
    assert nodes["c3"]["diff"] == ["--- parent c1 (generation 1)", "+++ child c3 (generation 2)", "@@ -1,2 +1,2 @@",
                                   " a", "-c", "+d"]
    assert {h for h, n in nodes.items() if n["on_best_path"]} == {"seed", "c1", "c2", "c3"}
    assert (lineage["best"], lineage["seed"], lineage["complete"]) == ("c3", "seed", True)


def test_evolution_lineage_marks_parents_it_was_not_given_as_unlisted() -> None:
    lineage = evolution_lineage({"best": {}}, "seed", [_candidate("c5", 4, "x", "gone")], complete=False)
    nodes = {n["code_hash"]: n for n in lineage["nodes"]}
    assert nodes["gone"] == {"code_hash": "gone", "generation": 3, "parents": [], "role": "unlisted",
                             "on_best_path": False}
    assert nodes["c5"]["diff"] is None and lineage["complete"] is False


def test_evolution_lineage_of_a_run_without_candidates_is_empty() -> None:
    assert evolution_lineage({"generations": []}, "seed", []) == {
        "nodes": [], "edges": [], "complete": True, "best": "", "seed": "seed"}
