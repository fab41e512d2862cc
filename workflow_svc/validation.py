"""Checks a workflow definition with networkx and reports every problem at once, each with its path."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from tdev_common.errors import FieldViolation
from workflow_svc import refs
from workflow_svc.domain import AgentInfo, AgentRef, CapturePolicy, NodeSpec, WorkflowSpec

NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
RESOURCE_LIMITS = {"memory_mb": (64.0, 16384.0), "cpu_seconds": (0.01, 3600.0)}
MAX_RETRIES = 10
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class Limits:
    """Configured bounds a definition must respect."""

    max_nodes: int
    max_timeout_seconds: float
    max_concurrency: int = field(metadata={"setting": "max_concurrency_limit"})


class AgentLookup:
    """What the registry answered for each agent reference: an AgentInfo or why it is unknown."""

    def __init__(self, found: Mapping[AgentRef, AgentInfo], missing: Mapping[AgentRef, str]) -> None:
        self.found = dict(found)
        self.missing = dict(missing)


def agent_refs(spec: WorkflowSpec) -> list[AgentRef]:
    """The distinct agents a definition names, in first-use order."""
    seen: dict[AgentRef, None] = {}
    for node in spec.nodes:
        if node.agent_id:
            seen.setdefault(AgentRef(node.agent_id, node.agent_version), None)
    return list(seen)


def build_graph(nodes: tuple[NodeSpec, ...]) -> nx.DiGraph:
    """The dependency graph: an edge dependency -> dependant for every known dependency.

    A repeated id is reported on its own; only its first node's dependencies count here, so one
    mistake does not also show up as a cycle.
    """
    graph: nx.DiGraph = nx.DiGraph()
    ids = {node.id for node in nodes}
    first: dict[str, NodeSpec] = {}
    for node in nodes:
        graph.add_node(node.id)
        first.setdefault(node.id, node)
    for node in first.values():
        for dependency in node.depends_on:
            if dependency in ids:
                graph.add_edge(dependency, node.id)
    return graph


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _node_violations(index: int, node: NodeSpec, limits: Limits) -> list[FieldViolation]:
    at = f"nodes[{index}]"
    problems: list[FieldViolation] = []
    if not NODE_ID.match(node.id):
        problems.append(
            FieldViolation(f"{at}.id", f'"{node.id}" must be 1-64 letters, digits, "_" or "-"')
        )
    if not node.agent_id:
        problems.append(FieldViolation(f"{at}.agent_id", "an agent id or name is required"))
    if node.agent_alias and not ALIAS.match(node.agent_alias):
        problems.append(FieldViolation(f"{at}.agent_alias", f'"{node.agent_alias}" is not an alias name (a '
                                                             "lowercase letter, then up to 39 of a-z 0-9 _ -)"))
    if node.agent_alias and node.agent_version:
        problems.append(FieldViolation(f"{at}.agent_alias", "leave agent_version empty with an alias: the alias "
                                                             "picks the version when each execution starts"))
    policy = node.retry_policy
    if not 0 <= policy.max_retries <= MAX_RETRIES:
        problems.append(
            FieldViolation(f"{at}.retry_policy.max_retries", f"must be 0 to {MAX_RETRIES}, got {policy.max_retries}")
        )
    multiplier = policy.backoff_multiplier
    if not _finite(multiplier) or not (multiplier == 0 or 1 <= multiplier <= 10):
        problems.append(
            FieldViolation(f"{at}.retry_policy.backoff_multiplier", f"must be 1 to 10 (0: default 2), got {multiplier}")
        )
    for name in ("initial_backoff", "max_backoff"):
        value = getattr(policy, name)
        if not _finite(value) or not 0 <= value <= MAX_BACKOFF_SECONDS:
            problems.append(
                FieldViolation(
                    f"{at}.retry_policy.{name}", f"must be 0 to {MAX_BACKOFF_SECONDS:g} seconds, got {value}"
                )
            )
    if policy.initial_backoff and policy.max_backoff and policy.initial_backoff > policy.max_backoff:
        problems.append(
            FieldViolation(
                f"{at}.retry_policy.max_backoff",
                f"must be at least initial_backoff ({policy.initial_backoff:g}), got {policy.max_backoff:g}",
            )
        )
    timeout = node.timeout_seconds
    if not _finite(timeout) or not 0 <= timeout <= limits.max_timeout_seconds:
        problems.append(
            FieldViolation(
                f"{at}.timeout_seconds", f"must be 0 to {limits.max_timeout_seconds:g} seconds, got {timeout}"
            )
        )
    for key, value in node.required_resources.items():
        bounds = RESOURCE_LIMITS.get(key)
        if bounds is None:
            problems.append(
                FieldViolation(
                    f"{at}.required_resources.{key}", f"unknown resource; known: {', '.join(sorted(RESOURCE_LIMITS))}"
                )
            )
        elif not isinstance(value, int | float) or not bounds[0] <= value <= bounds[1]:
            problems.append(
                FieldViolation(
                    f"{at}.required_resources.{key}", f"must be {bounds[0]:g} to {bounds[1]:g}, got {value!r}"
                )
            )
    return problems


def _cycles(graph: nx.DiGraph, index_of: Mapping[str, int]) -> list[FieldViolation]:
    problems = []
    components = sorted(
        (sorted(component) for component in nx.strongly_connected_components(graph)),
        key=lambda members: index_of[members[0]],
    )
    for members in components:
        if len(members) == 1 and not graph.has_edge(members[0], members[0]):
            continue
        edges = nx.find_cycle(graph.subgraph(members), source=min(members, key=index_of.__getitem__))
        chain = [edge[0] for edge in edges] + [edges[0][0]]
        # Printed in "depends on" order: a -> b means a depends on b.
        chain.reverse()
        first = chain[0]
        problems.append(
            FieldViolation(f"nodes[{index_of[first]}].depends_on", f"cycle: {' -> '.join(chain)}")
        )
    return problems


def _ref_violations(spec: WorkflowSpec, graph: nx.DiGraph, index_of: Mapping[str, int]) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    for index, node in enumerate(spec.nodes):
        found = list(refs.find(node.inputs))
        # Ancestors only where needed: computing them for every node is quadratic on long chains.
        needs = node.id in graph and any(text.startswith("nodes.") for _, text in found)
        ancestors = nx.ancestors(graph, node.id) if needs else set()
        for path, text in found:
            field = f"nodes[{index}].{path}"
            try:
                ref = refs.parse(text)
            except refs.RefError as error:
                problems.append(FieldViolation(field, str(error)))
                continue
            if ref.scope != "nodes":
                continue
            if ref.name not in index_of:
                problems.append(FieldViolation(field, f'"$ref" {text}: unknown node "{ref.name}"'))
            elif ref.name not in ancestors:
                problems.append(
                    FieldViolation(field, f'"$ref" {text}: node "{ref.name}" is not an ancestor of "{node.id}"')
                )
    for name, text in sorted(spec.outputs.items()):
        field = f"outputs.{name}"
        try:
            ref = refs.parse(text)
        except refs.RefError as error:
            problems.append(FieldViolation(field, str(error)))
            continue
        if ref.scope == "context":
            problems.append(FieldViolation(field, f'"{text}": outputs read inputs. or nodes. only'))
        elif ref.scope == "nodes" and ref.name not in index_of:
            problems.append(FieldViolation(field, f'"{text}": unknown node "{ref.name}"'))
    return problems


MAX_REDACT_KEYS = 100
MAX_CASE_BYTES = 1024 * 1024


def _capture_violations(capture: CapturePolicy) -> list[FieldViolation]:
    problems = []
    rate = capture.success_sample_rate
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        problems.append(FieldViolation("capture.success_sample_rate", f"must be 0 to 1, got {rate}"))
    if not 0 <= capture.max_case_bytes <= MAX_CASE_BYTES:
        problems.append(FieldViolation("capture.max_case_bytes",
                                       f"must be 0 (the default) to {MAX_CASE_BYTES}, got {capture.max_case_bytes}"))
    if len(capture.redact_keys) > MAX_REDACT_KEYS:
        problems.append(FieldViolation("capture.redact_keys", f"at most {MAX_REDACT_KEYS} keys"))
    for index, key in enumerate(capture.redact_keys):
        if not key.strip():
            problems.append(FieldViolation(f"capture.redact_keys[{index}]", "must not be empty"))
    return problems


def structural_violations(spec: WorkflowSpec, limits: Limits) -> list[FieldViolation]:
    """Every problem of a definition that needs no registry, in a stable order."""
    problems: list[FieldViolation] = []
    if not spec.name.strip():
        problems.append(FieldViolation("name", "a name is required"))
    if not spec.nodes:
        problems.append(FieldViolation("nodes", "a workflow needs at least one node"))
    if len(spec.nodes) > limits.max_nodes:
        problems.append(
            FieldViolation("nodes", f"{len(spec.nodes)} nodes; at most {limits.max_nodes} are allowed")
        )
    if not 0 <= spec.max_concurrency <= limits.max_concurrency:
        problems.append(
            FieldViolation(
                "max_concurrency", f"must be 0 to {limits.max_concurrency}, got {spec.max_concurrency}"
            )
        )
    problems.extend(_capture_violations(spec.capture))
    index_of: dict[str, int] = {}
    for index, node in enumerate(spec.nodes):
        if node.id in index_of:
            problems.append(
                FieldViolation(
                    f"nodes[{index}].id", f'duplicate id "{node.id}" (first used by nodes[{index_of[node.id]}])'
                )
            )
        else:
            index_of[node.id] = index
        problems.extend(_node_violations(index, node, limits))
    for index, node in enumerate(spec.nodes):
        seen: set[str] = set()
        for position, dependency in enumerate(node.depends_on):
            field = f"nodes[{index}].depends_on[{position}]"
            if dependency not in index_of:
                problems.append(FieldViolation(field, f'unknown node "{dependency}"'))
            elif dependency in seen:
                problems.append(FieldViolation(field, f'"{dependency}" is listed twice'))
            seen.add(dependency)
    graph = build_graph(spec.nodes)
    problems.extend(_cycles(graph, index_of))
    if len(index_of) > 1 and not nx.is_weakly_connected(graph):
        parts = sorted(
            (sorted(part, key=index_of.__getitem__) for part in nx.weakly_connected_components(graph)),
            key=lambda part: index_of[part[0]],
        )
        shown = "; ".join("{" + ", ".join(part[:5]) + (", ..." if len(part) > 5 else "") + "}" for part in parts[:5])
        problems.append(
            FieldViolation("nodes", f"the graph is disconnected: {len(parts)} separate parts: {shown}")
        )
    problems.extend(_ref_violations(spec, graph, index_of))
    return problems


def agent_violations(spec: WorkflowSpec, lookup: AgentLookup) -> list[FieldViolation]:
    """One problem per node naming an agent or version the registry does not know."""
    problems: list[FieldViolation] = []
    for index, node in enumerate(spec.nodes):
        reason = lookup.missing.get(AgentRef(node.agent_id, node.agent_version))
        if reason is None:
            continue
        field = f"nodes[{index}].agent_version" if reason.startswith("version") else f"nodes[{index}].agent_id"
        problems.append(FieldViolation(field, reason.removeprefix("version:").strip()))
    return problems


def summary(problems: list[FieldViolation], limit: int = 5) -> str:
    """A readable one-paragraph message naming the first problems."""
    head = "; ".join(f"{problem.field}: {problem.description}" for problem in problems[:limit])
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    noun = "problem" if len(problems) == 1 else "problems"
    return f"invalid workflow definition, {len(problems)} {noun}: {head}{more}"
