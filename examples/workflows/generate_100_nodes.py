"""Writes generated_100_nodes.json: 9 layers of 11 sum_numbers nodes and one sink (100 nodes).

Node (layer, i) adds the totals of (layer-1, i) and (layer-1, (i+1) % 11); layer 0 adds the workflow
input ``seed`` and i. Run: ``python examples/workflows/generate_100_nodes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WIDTH, LAYERS = 11, 9


def generate() -> dict[str, Any]:
    """The definition as a JSON object."""
    nodes: list[dict[str, Any]] = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            node_id = f"l{layer}_{i:02d}"
            if layer == 0:
                numbers: list[Any] = [{"$ref": "inputs.seed"}, i]
                depends: list[str] = []
            else:
                parents = [f"l{layer - 1}_{i:02d}", f"l{layer - 1}_{(i + 1) % WIDTH:02d}"]
                numbers = [{"$ref": f"nodes.{p}.output.total"} for p in parents]
                depends = parents
            nodes.append({"id": node_id, "agent_id": "sum_numbers", "inputs": {"numbers": numbers},
                          "depends_on": depends, "retry_policy": {"max_retries": 1}, "timeout_seconds": 10})
    last = [f"l{LAYERS - 1}_{i:02d}" for i in range(WIDTH)]
    nodes.append({"id": "total", "agent_id": "sum_numbers",
                  "inputs": {"numbers": [{"$ref": f"nodes.{p}.output.total"} for p in last]},
                  "depends_on": last, "timeout_seconds": 10})
    return {
        "name": "generated-100-nodes",
        "version": "1.0.0",
        "description": f"A generated {len(nodes)}-node DAG ({LAYERS} layers of {WIDTH}, then a sink).",
        "metadata": {"example": "generated", "generator": "examples/workflows/generate_100_nodes.py"},
        "max_concurrency": 8,
        "nodes": nodes,
        "outputs": {"total": "nodes.total.output.total"},
    }


if __name__ == "__main__":
    target = Path(__file__).with_name("generated_100_nodes.json")
    target.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {target}")
