"""Which agent a failed validation run points at, and the failure to feed back to its repair."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder_svc.domain import ExecutionResult
from builder_svc.specs import dependencies, json_equal, output_mismatch, parse_reference, topological
from tdev_common.llm.schemas import Failure

JSON = dict[str, Any]
_MISSING = object()


@dataclass(frozen=True)
class Blame:
    """The spec held responsible, the failure its repair gets, and (when known) the example to add."""

    spec_id: str
    failure: Failure
    example: JSON | None = None


def _resolve(ref_text: str, inputs: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any] | None]) -> Any:
    ref = parse_reference(ref_text)
    if ref is None:
        return _MISSING
    if ref.scope == "inputs":
        return inputs.get(ref.name, _MISSING)
    produced = outputs.get(ref.name)
    return produced.get(ref.key, _MISSING) if produced else _MISSING


def node_input(spec: Mapping[str, Any], inputs: Mapping[str, Any],
               outputs: Mapping[str, Mapping[str, Any] | None]) -> JSON | None:
    """What a node received in a run (None when an upstream value is missing)."""
    resolved = {}
    for key, ref in (spec.get("inputs") or {}).items():
        value = _resolve(ref, inputs, outputs)
        if value is _MISSING:
            return None
        resolved[key] = value
    return resolved


def _example_for(spec: Mapping[str, Any], given: Mapping[str, Any] | None) -> JSON | None:
    if given is None:
        return None
    for example in spec.get("examples") or ():
        if json_equal(dict(example.get("input") or {}), dict(given)):
            return dict(example)
    return None


def _ancestors(specs: Mapping[str, Mapping[str, Any]], spec_id: str) -> set[str]:
    found: set[str] = set()
    pending = [spec_id]
    while pending:
        for dependency in dependencies(specs[pending.pop()]):
            if dependency in specs and dependency not in found:
                found.add(dependency)
                pending.append(dependency)
    return found


def responsible(plan: Mapping[str, Any], inputs: Mapping[str, Any], expected: Mapping[str, Any] | None,
                result: ExecutionResult) -> Blame | None:
    """The agent to fix for a failed validation run, or None when nothing points at one.

    A failed node is responsible for its own exception. For wrong outputs the earliest agent (in data-flow
    order) whose actual input is one of its examples but whose output differs from that example is blamed;
    failing that, the agent producing the first wrong output, with the expected value the workflow example
    gives it.
    """
    specs = {str(s["id"]): s for s in plan.get("agents") or []}
    outputs = {node_id: node.output for node_id, node in result.nodes.items()}
    failed = result.error_node or next((n for n, node in result.nodes.items() if node.state == "FAILED"), "")
    if failed in specs:
        node = result.nodes.get(failed)
        given = node_input(specs[failed], inputs, outputs) or {}
        timed_out = bool(node and node.error_type == "timeout")
        failure = Failure(kind="timeout" if timed_out else "exception",
                          exception_type=(node.error_type if node else result.error_type),
                          message=(node.error_message if node else result.error_message),
                          traceback=(node.traceback if node else ""), input=given)
        example = _example_for(specs[failed], given)
        if example is not None:
            failure["expected_output"] = example["expected_output"]
        return Blame(failed, failure, None)
    if expected is None or result.outputs is None:
        return None
    wrong = [key for key in expected if key not in result.outputs or not json_equal(expected[key],
                                                                                   result.outputs[key])]
    if not wrong:
        return None
    producer_ref = parse_reference(str((plan.get("outputs") or {}).get(wrong[0], "")))
    if producer_ref is None or producer_ref.name not in specs:
        return None
    suspects = _ancestors(specs, producer_ref.name) | {producer_ref.name}
    for spec in topological(list(specs.values())):
        spec_id = str(spec["id"])
        if spec_id not in suspects:
            continue
        received = node_input(spec, inputs, outputs)
        example = _example_for(spec, received)
        actual = outputs.get(spec_id) or {}
        if example is not None and output_mismatch(example["expected_output"], actual) is not None:
            return Blame(spec_id, Failure(kind="wrong_output", message=output_mismatch(
                example["expected_output"], actual) or "", input=dict(received or {}),
                expected_output=example["expected_output"], actual_output=actual), None)
    producer = specs[producer_ref.name]
    given = node_input(producer, inputs, outputs) or {}
    actual = outputs.get(producer_ref.name) or {}
    want = {}
    for key, ref_text in (plan.get("outputs") or {}).items():
        ref = parse_reference(str(ref_text))
        if ref is not None and ref.name == producer_ref.name and key in expected:
            want[ref.key] = expected[key]
    failure = Failure(kind="wrong_output", message=output_mismatch(want, actual) or "wrong workflow output",
                      input=dict(given), expected_output=want, actual_output=actual)
    return Blame(producer_ref.name, failure, {"input": dict(given), "expected_output": want})
