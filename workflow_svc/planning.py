"""The execution plan of a valid definition: parallel generations, critical path, priorities."""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from workflow_svc.domain import ExecutionPlan, NodeSpec, PlanGeneration
from workflow_svc.validation import build_graph

DEFAULT_ESTIMATE_MS = 1.0


def plan(nodes: tuple[NodeSpec, ...], estimates_ms: Mapping[str, float]) -> ExecutionPlan:
    """Computes the plan deterministically (ties broken by node id).

    ``estimates_ms`` maps node id to its expected duration (from the registry's metrics); nodes without
    an estimate count as 1 ms, so with no history the critical path is the longest chain of nodes.
    """
    graph = build_graph(nodes)
    generations = tuple(PlanGeneration(tuple(sorted(layer))) for layer in nx.topological_generations(graph))
    weight = {node.id: max(estimates_ms.get(node.id, DEFAULT_ESTIMATE_MS), DEFAULT_ESTIMATE_MS) for node in nodes}
    # remaining[n]: the heaviest path from n to a sink, n included; next_hop[n] the step taken on it.
    remaining: dict[str, float] = {}
    next_hop: dict[str, str | None] = {}
    for node_id in reversed([n for layer in generations for n in layer.node_ids]):
        best: str | None = None
        for child in sorted(graph.successors(node_id)):
            if best is None or remaining[child] > remaining[best]:
                best = child
        next_hop[node_id] = best
        remaining[node_id] = weight[node_id] + (remaining[best] if best is not None else 0.0)
    path: list[str] = []
    if remaining:
        sources = sorted(n for n in graph.nodes if graph.in_degree(n) == 0)
        current: str | None = max(sources, key=lambda n: (remaining[n], _reverse_key(n)))
        while current is not None:
            path.append(current)
            current = next_hop[current]
    levels = sorted(set(remaining.values()))
    rank = {value: position + 1 for position, value in enumerate(levels)}
    priorities = {node_id: rank[value] for node_id, value in sorted(remaining.items())}
    return ExecutionPlan(generations=generations, critical_path=tuple(path), priorities=priorities)


def _reverse_key(node_id: str) -> tuple[int, ...]:
    # max() with ties: prefer the smallest id, so negate the code points.
    return tuple(-ord(char) for char in node_id)
