"""Pure shaping of service answers for the pages: DAG layers, code diffs, an evolution's lineage."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def dag_layers(nodes: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Node ids by layer: a node sits one layer after its deepest dependency (roots in layer 0).

    Unknown dependencies are ignored and a cycle (which the workflow service refuses) cannot loop: a node
    on one lands in the last layer.
    """
    depends = {str(node["id"]): [str(d) for d in node.get("depends_on", [])] for node in nodes}
    depth: dict[str, int] = {}

    def layer_of(node_id: str, visiting: frozenset[str]) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in visiting:
            return len(depends)
        parents = [d for d in depends[node_id] if d in depends]
        value = 1 + max((layer_of(p, visiting | {node_id}) for p in parents), default=-1)
        depth[node_id] = value
        return value

    for node_id in depends:
        layer_of(node_id, frozenset())
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in depends:
        layers[depth[node_id]].append(node_id)
    return [layer for layer in layers if layer]


def code_diff(parent: str, child: str, parent_name: str = "parent", child_name: str = "child") -> list[str]:
    """A unified diff of two sources, one string per line (no trailing newlines)."""
    return list(difflib.unified_diff(parent.splitlines(), child.splitlines(), fromfile=parent_name,
                                     tofile=child_name, lineterm=""))


def evolution_lineage(run: Mapping[str, Any], seed_hash: str, candidates: Sequence[Mapping[str, Any]],
                      *, complete: bool = True) -> dict[str, Any]:
    """A run's candidates (ListCandidates, with code) as a parent->child tree, each child with its diff against
    its first parent (the program its operator edited; a crossover's second parent is the donor).

    Nodes are the candidates plus any parent they name that is not among them (``role`` "unlisted": the list was
    cut short, or the run began before candidates were stored); edges run from every named parent to its child.
    ``on_best_path`` marks the best candidate's ancestors back to the seed.
    """
    listed = {str(c["code_hash"]): c for c in candidates if c.get("code_hash")}
    best = run.get("best") or {}
    best_hash = str(best.get("code_hash", ""))
    if best_hash and best_hash not in listed and best.get("code"):
        listed[best_hash] = best
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    for code_hash, candidate in listed.items():
        parents = [str(p) for p in candidate.get("parent_hashes", [])]
        generation = int(candidate.get("generation", 0))
        node: dict[str, Any] = {
            "code_hash": code_hash, "generation": generation, "fitness": candidate.get("fitness"),
            "correctness": candidate.get("correctness"), "operator": candidate.get("operator", ""),
            "parents": parents, "role": "seed" if code_hash == seed_hash else "",
        }
        if parents:
            first = listed.get(parents[0])
            node["diff_from"] = parents[0]
            node["diff"] = (code_diff(str(first.get("code", "")), str(candidate.get("code", "")),
                                      f"parent {parents[0][:12]} (generation {int(first.get('generation', 0))})",
                                      f"child {code_hash[:12]} (generation {generation})")
                            if first is not None else None)
        nodes[code_hash] = node
        edges.extend({"from": parent, "to": code_hash} for parent in parents)
    for edge in edges:
        if edge["from"] not in nodes:
            child = nodes[edge["to"]]
            nodes[edge["from"]] = {"code_hash": edge["from"], "generation": max(child["generation"] - 1, 0),
                                   "parents": [], "role": "unlisted"}
    if best_hash in nodes and best_hash != seed_hash:
        nodes[best_hash]["role"] = "best"
    path, todo = set(), [best_hash] if best_hash in nodes else []
    while todo:
        current = todo.pop()
        if current not in path:
            path.add(current)
            todo.extend(nodes[current].get("parents", []))
    for code_hash, node in nodes.items():
        node["on_best_path"] = code_hash in path
    ordered = sorted(nodes.values(), key=lambda n: (n["generation"], n["code_hash"]))
    return {"nodes": ordered, "edges": edges, "complete": complete, "best": best_hash, "seed": seed_hash}
