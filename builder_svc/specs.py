"""Agent plans and specs: checking a plan, ordering its agents, matching registry agents, judging examples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from builder_svc.domain import AgentSummary, ExampleOutcome
from tdev_common.llm.schemas import CatalogueEntry, Failure

JSON = dict[str, Any]
REL_TOLERANCE = 1e-9


# ---- references ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """``inputs.<key>`` or ``nodes.<id>.output.<key>`` (DESIGN §5 without the ``$ref`` wrapper)."""

    scope: str
    name: str
    key: str


def parse_reference(text: str) -> Reference | None:
    """The reference, or None when it is not one of the two forms a plan may use."""
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) == 2 and parts[0] == "inputs" and parts[1]:
        return Reference("inputs", parts[1], parts[1])
    if len(parts) == 4 and parts[0] == "nodes" and parts[2] == "output" and parts[1] and parts[3]:
        return Reference("nodes", parts[1], parts[3])
    return None


def _keys(schema: Any, *, required_only: bool) -> set[str]:
    if not isinstance(schema, Mapping):
        return set()
    required = {str(k) for k in schema.get("required") or () if isinstance(k, str)}
    if required_only:
        return required
    properties = schema.get("properties")
    return required | ({str(k) for k in properties} if isinstance(properties, Mapping) else set())


def dependencies(spec: Mapping[str, Any]) -> list[str]:
    """Declared dependencies plus every node the spec's inputs read, in first-seen order."""
    found = [str(d) for d in spec.get("depends_on") or ()]
    for ref_text in (spec.get("inputs") or {}).values():
        ref = parse_reference(ref_text)
        if ref is not None and ref.scope == "nodes":
            found.append(ref.name)
    return list(dict.fromkeys(found))


# ---- plan checks -----------------------------------------------------------------------------------------
def check_plan(plan: Mapping[str, Any]) -> list[str]:
    """Every problem that would stop the plan from becoming a working workflow, in a stable order."""
    problems: list[str] = []
    agents = list(plan.get("agents") or [])
    ids = [str(agent.get("id", "")) for agent in agents]
    if not agents:
        problems.append("agents: the plan has no agents")
    seen: set[str] = set()
    for index, agent_id in enumerate(ids):
        if agent_id in seen:
            problems.append(f'agents[{index}].id: "{agent_id}" is used twice')
        seen.add(agent_id)
    workflow_inputs = _keys(plan.get("workflow_input_schema"), required_only=False)
    for index, agent in enumerate(agents):
        at = f"agents[{index}] ({ids[index]})"
        examples = agent.get("examples") or []
        if len(examples) < 2:
            problems.append(f"{at}.examples: at least 2 examples are needed, got {len(examples)}")
        for key, ref_text in sorted((agent.get("inputs") or {}).items()):
            ref = parse_reference(ref_text)
            if ref is None:
                problems.append(f'{at}.inputs.{key}: "{ref_text}" is not inputs.<key> or nodes.<id>.output.<key>')
            elif ref.scope == "inputs" and workflow_inputs and ref.name not in workflow_inputs:
                problems.append(f'{at}.inputs.{key}: workflow input "{ref.name}" is not in workflow_input_schema')
            elif ref.scope == "nodes" and ref.name not in seen:
                problems.append(f'{at}.inputs.{key}: unknown agent "{ref.name}"')
            elif ref.scope == "nodes" and ref.name == ids[index]:
                problems.append(f"{at}.inputs.{key}: an agent cannot read its own output")
        for dependency in agent.get("depends_on") or ():
            if dependency not in seen:
                problems.append(f'{at}.depends_on: unknown agent "{dependency}"')
        missing = _keys(agent.get("input_schema"), required_only=True) - set(agent.get("inputs") or {})
        for key in sorted(missing):
            problems.append(f'{at}.inputs: required input "{key}" has no source')
    if not problems:
        cycle = find_cycle(agents)
        if cycle:
            problems.append("agents: the data flow has a cycle: " + " -> ".join(cycle))
    outputs = plan.get("outputs") or {}
    if not outputs:
        problems.append("outputs: the plan maps no workflow outputs")
    for key, ref_text in sorted(outputs.items()):
        ref = parse_reference(ref_text)
        if ref is None or ref.scope != "nodes":
            problems.append(f'outputs.{key}: "{ref_text}" is not nodes.<id>.output.<key>')
        elif ref.name not in seen:
            problems.append(f'outputs.{key}: unknown agent "{ref.name}"')
    for index, example in enumerate(plan.get("examples") or []):
        extra = set(example.get("expected_output") or {}) - set(outputs)
        if extra:
            problems.append(f"examples[{index}].expected_output: keys {sorted(extra)} are not workflow outputs")
    return problems


def find_cycle(agents: Sequence[Mapping[str, Any]]) -> list[str]:
    """One cycle of the dependency graph as a path (first node repeated at the end), or []."""
    graph = {str(a["id"]): dependencies(a) for a in agents}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dependency in graph.get(node, []):
            if state.get(dependency) == 1:
                return [*stack[stack.index(dependency):], dependency]
            if dependency in graph and dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def topological(agents: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """The agents ordered so that each comes after what it depends on (plan order among equals)."""
    remaining = [dict(a) for a in agents]
    done: set[str] = set()
    ordered: list[JSON] = []
    while remaining:
        ready = [a for a in remaining if set(dependencies(a)) <= done]
        if not ready:  # a cycle: check_plan reports it; keep the rest in plan order
            ready = remaining[:1]
        for agent in ready:
            ordered.append(agent)
            done.add(str(agent["id"]))
            remaining.remove(agent)
    return ordered


# ---- registry agents -------------------------------------------------------------------------------------
def catalogue_entry(agent: AgentSummary) -> CatalogueEntry:
    """A registry agent as the planner sees it (the offline planner matches template and parameters)."""
    capabilities = agent.capabilities
    entry: JSON = {
        "agent_id": agent.agent_id, "version": agent.version, "name": agent.class_name or agent.name,
        "description": agent.description or str(capabilities.get("description", "")),
        "registry_name": agent.name,
    }
    for key in ("input_schema", "output_schema"):
        if isinstance(capabilities.get(key), Mapping):
            entry[key] = dict(capabilities[key])
    if isinstance(capabilities.get("template"), str):
        entry["template"] = capabilities["template"]
        entry["parameters"] = capabilities.get("parameters", {})
    return cast(CatalogueEntry, entry)


def fits(agent: AgentSummary, spec: Mapping[str, Any]) -> bool:
    """Whether a registry agent's declared schemas fit a spec: every input it requires is given, and it
    produces every output the spec needs. Fitting is necessary, not sufficient: examples decide."""
    given = set(spec.get("inputs") or {}) | _keys(spec.get("input_schema"), required_only=False)
    needs_out = _keys(spec.get("output_schema"), required_only=True) or _keys(
        spec.get("output_schema"), required_only=False)
    declared_in = agent.capabilities.get("input_schema")
    declared_out = agent.capabilities.get("output_schema")
    if not isinstance(declared_in, Mapping) or not isinstance(declared_out, Mapping):
        return False
    requires = _keys(declared_in, required_only=True)
    produces = _keys(declared_out, required_only=False)
    return bool(needs_out) and requires <= given and needs_out <= produces


def search_query(spec: Mapping[str, Any]) -> str:
    """What to ask the registry for one spec: its purpose and its input and output keys."""
    keys = sorted(set(spec.get("inputs") or {}) | _keys(spec.get("output_schema"), required_only=False))
    return f"{spec.get('purpose', '')} {' '.join(keys)}".strip()[:2000]


# ---- examples --------------------------------------------------------------------------------------------
def json_equal(expected: Any, actual: Any) -> bool:
    """JSON equality: booleans are not numbers, numbers compare by value (within 1e-9 relative), lists in
    order, objects by key."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual or math.isclose(expected, actual, rel_tol=REL_TOLERANCE, abs_tol=1e-12)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(json_equal(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(json_equal(v, actual[k]) for k, v in expected.items())
    return type(expected) is type(actual) and bool(expected == actual)


def _short(value: Any, limit: int = 200) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def output_mismatch(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    """Why ``actual`` does not give every expected key its expected value (extra keys are fine), or None."""
    for key, value in expected.items():
        if key not in actual:
            return f'output "{key}" is missing (keys: {sorted(actual)})'
        if not json_equal(value, actual[key]):
            return f'output "{key}": expected {_short(value)}, got {_short(actual[key])}'
    return None


def failure_of(example: Mapping[str, Any], outcome: ExampleOutcome) -> Failure | None:
    """The failure an example run shows, in the shape the repair prompt takes, or None when it passed."""
    expected = dict(example.get("expected_output") or {})
    given = dict(example.get("input") or {})
    if outcome.ok and outcome.output is not None:
        mismatch = output_mismatch(expected, outcome.output)
        if mismatch is None:
            return None
        return Failure(kind="wrong_output", message=mismatch, input=given, expected_output=expected,
                       actual_output=outcome.output)
    if outcome.kind == "error":
        return Failure(kind="syntax" if outcome.error_type == "SyntaxError" else "exception",
                       exception_type=outcome.error_type, message=outcome.message,
                       traceback=outcome.traceback, input=given, expected_output=expected)
    if outcome.kind == "timeout":
        return Failure(kind="timeout", message=outcome.message or "the example timed out", input=given,
                       expected_output=expected)
    return Failure(kind="invalid_output", message=f"{outcome.kind}: {outcome.message}".strip(": "), input=given,
                   expected_output=expected)


def describe_failure(failure: Mapping[str, Any]) -> str:
    """One line: what went wrong."""
    kind = failure.get("kind", "")
    if kind in ("exception", "syntax"):
        return f"{failure.get('exception_type', 'error')}: {failure.get('message', '')}"[:500]
    return f"{kind}: {failure.get('message', '')}"[:500]
