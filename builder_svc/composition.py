"""A workflow definition wiring the selected agents as the plan's data flow says."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from builder_svc.domain import WorkflowDefinition, WorkflowNode
from builder_svc.specs import dependencies, topological


def workflow_name(build_id: str, plan: Mapping[str, Any]) -> str:
    """A readable, unique name: the plan's kind and the build."""
    kind = str(plan.get("kind") or "service").replace(" ", "-")[:60]
    return f"{kind}-{build_id}"


def compose(build_id: str, service_id: str, version: str, requirements: str, plan: Mapping[str, Any],
            agents: Mapping[str, Mapping[str, Any]], node_timeout_seconds: float) -> WorkflowDefinition:
    """The definition: one node per spec, pinned to the selected agent version, inputs as ``$ref``s.

    ``agents`` maps each spec id to its selection (``agent_id``, ``version``).
    """
    nodes = []
    for spec in topological(plan["agents"]):
        selected = agents[spec["id"]]
        nodes.append(WorkflowNode(
            node_id=str(spec["id"]), agent_id=str(selected["agent_id"]), agent_version=str(selected["version"]),
            inputs={str(key): str(ref) for key, ref in (spec.get("inputs") or {}).items()},
            depends_on=tuple(dependencies(spec)), timeout_seconds=node_timeout_seconds,
        ))
    nodes = connected(nodes)
    metadata: dict[str, Any] = {
        "built_by": "tdev-builder", "build_id": build_id, "service_id": service_id,
        "requirements": requirements[:2000],
        "input_schema": dict(plan.get("workflow_input_schema") or {}),
        "output_schema": dict(output_schema(plan)),
    }
    return WorkflowDefinition(
        name=workflow_name(build_id, plan), version=version,
        description=(requirements if len(requirements) <= 500 else requirements[:499] + "…"),
        nodes=tuple(nodes), outputs={str(k): str(v) for k, v in (plan.get("outputs") or {}).items()},
        metadata=metadata,
    )


def connected(nodes: list[WorkflowNode]) -> list[WorkflowNode]:
    """The nodes with ordering-only dependencies joining independent branches to the first node.

    The workflow service rejects a graph in separate parts (e.g. two agents that each read only workflow
    inputs); each other part's first node then waits for the first node of the plan, which adds no data flow.
    """
    if len(nodes) < 2:
        return nodes
    part_of = {node.node_id: node.node_id for node in nodes}

    def find(node_id: str) -> str:
        while part_of[node_id] != node_id:
            part_of[node_id] = part_of[part_of[node_id]]
            node_id = part_of[node_id]
        return node_id

    for node in nodes:
        for dependency in node.depends_on:
            if dependency in part_of:
                part_of[find(node.node_id)] = find(dependency)
    first = nodes[0]
    joined: list[WorkflowNode] = []
    seen_parts = {find(first.node_id)}
    for node in nodes:
        part = find(node.node_id)
        if part not in seen_parts:
            seen_parts.add(part)
            node = replace(node, depends_on=(*node.depends_on, first.node_id))
        joined.append(node)
    return joined


def output_schema(plan: Mapping[str, Any]) -> Mapping[str, Any]:
    """The plan's workflow output schema, else one built from the producing agents' output schemas."""
    given = plan.get("workflow_output_schema")
    if isinstance(given, Mapping) and given:
        return given
    producers = {str(a["id"]): a.get("output_schema") or {} for a in plan.get("agents") or []}
    properties: dict[str, Any] = {}
    for key, ref in (plan.get("outputs") or {}).items():
        parts = str(ref).split(".")
        source = producers.get(parts[1], {}) if len(parts) == 4 else {}
        properties[key] = dict((source.get("properties") or {}).get(parts[-1], {}))
    return {"type": "object", "required": sorted(properties), "properties": properties}


def workflow_version(round_number: int) -> str:
    """``1.0.0`` for the first composition, ``1.1.0`` after one validation fix, ..."""
    return f"1.{round_number - 1}.0"
