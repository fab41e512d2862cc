"""Pure shaping of service answers for the pages: DAG layers, code diffs, an evolution's lineage."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
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


def evolution_lineage(run: Mapping[str, Any], seed_hash: str) -> dict[str, Any]:
    """The candidates a run exposes as a tree: the seed, each generation's best and the run's best with the
    parents it names.

    The evolution API stores full candidates only for the run's best, so edges are of two kinds: ``parent``
    (from ``best.parent_hashes``, the operator's real inputs) and ``succeeds`` (a generation's new best after
    the previous one, drawn dashed: an order, not an ancestry).
    """
    nodes: dict[str, dict[str, Any]] = {}

    def add(code_hash: str, generation: int, **facts: Any) -> None:
        if not code_hash:
            return
        node = nodes.setdefault(code_hash, {"code_hash": code_hash, "generation": generation})
        node["generation"] = min(node["generation"], generation)
        node.update({k: v for k, v in facts.items() if v not in (None, "")})

    add(seed_hash, 0, role="seed", fitness=run.get("seed_fitness"))
    edges: list[dict[str, str]] = []
    previous = seed_hash
    for report in sorted(run.get("generations", []), key=lambda r: int(r.get("generation", 0))):
        best_hash = str(report.get("best_code_hash", ""))
        if not best_hash:
            continue
        add(best_hash, int(report.get("generation", 0)), fitness=report.get("best_fitness"))
        if best_hash != previous and previous:
            edges.append({"from": previous, "to": best_hash, "kind": "succeeds"})
        previous = best_hash
    best = run.get("best") or {}
    if best.get("code_hash"):
        add(best["code_hash"], int(best.get("generation", 0)), role="best", fitness=best.get("fitness"),
            operator=best.get("operator"))
        parents = [str(p) for p in best.get("parent_hashes", [])]
        for parent in parents:
            add(parent, max(int(best.get("generation", 0)) - 1, 0))
            edges = [e for e in edges if not (e["from"] == parent and e["to"] == best["code_hash"])]
            edges.append({"from": parent, "to": best["code_hash"], "kind": "parent"})
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["generation"], n["code_hash"])), "edges": edges}
