"""Offline analysis: what an agent does (capabilities) and how good its code is, from ``ast`` alone."""

from __future__ import annotations

import ast
from typing import Any

from tdev_common.errors import InvalidArgument
from tdev_common.llm.offline.checks import all_findings, quality
from tdev_common.llm.offline.codeinfo import CodeFacts, collect, input_schema, loop_depth, output_schema

_SORTING = {"sorted", "sort"}


def time_complexity(facts: CodeFacts) -> tuple[str, int]:
    """A rough big-O of execute from loop nesting and sorting: O(1), O(n), O(n log n), O(n^k)."""
    target: ast.AST = facts.execute if facts.execute is not None else facts.tree
    depth = loop_depth(target)
    names = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
             for node in ast.walk(target) if isinstance(node, ast.Call)}
    sorts = bool(names & _SORTING)
    iterates = bool(names & {"sum", "min", "max", "join", "split", "findall", "Counter", "set", "list",
                             "fmean", "median", "pstdev", "stdev", "all", "any", "len"})
    if depth >= 2:
        return f"O(n^{depth})", depth
    if sorts:
        return "O(n log n)", depth
    if depth == 1 or iterates:
        return "O(n)", depth
    return "O(1)", depth


def _summary(facts: CodeFacts) -> str:
    if facts.agent is not None:
        doc = ast.get_docstring(facts.agent)
        if doc:
            return doc.strip().splitlines()[0]
    declared = facts.declared or {}
    for key in ("description", "summary", "purpose"):
        if isinstance(declared.get(key), str) and declared[key].strip():
            return str(declared[key]).strip().splitlines()[0]
    if facts.execute is not None:
        doc = ast.get_docstring(facts.execute)
        if doc:
            return doc.strip().splitlines()[0]
    name = facts.agent.name if facts.agent is not None else "The module"
    reads = ", ".join(facts.inputs) or "nothing it names"
    returns = ", ".join(facts.outputs) or "an object"
    return f"{name} reads {reads} and returns {returns}."


def _confidence(facts: CodeFacts) -> float:
    """How far the static picture can be trusted: lower for dynamic access and untyped inputs."""
    confidence = 0.9
    if facts.agent is None:
        confidence -= 0.3
    if facts.dynamic_inputs:
        confidence -= 0.15
    if facts.dynamic_outputs and not (facts.declared or {}).get("output_schema"):
        confidence -= 0.15
    untyped = sum(1 for read in facts.inputs.values() if read.type is None)
    confidence -= 0.05 * min(untyped, 3)
    if facts.non_dict_returns:
        confidence -= 0.1
    return round(max(0.2, confidence), 2)


def analyse(code: str) -> dict[str, Any]:
    """ANALYSIS_SCHEMA answer for the code.

    Raises:
        InvalidArgument: the code does not parse (line and message given).
    """
    try:
        facts = collect(code)
    except SyntaxError as error:
        raise InvalidArgument(f"code does not parse: line {error.lineno}: {error.msg}") from None
    complexity, depth = time_complexity(facts)
    findings = all_findings(facts)
    assessed = quality(facts, findings)
    return {
        "agent_class": facts.agent.name if facts.agent is not None else None,
        "capabilities": {
            "summary": _summary(facts),
            "input_schema": input_schema(facts),
            "output_schema": output_schema(facts),
            "dependencies": facts.dependencies,
            "estimated_performance": {
                "time_complexity": complexity,
                "cyclomatic_complexity": assessed["max_complexity"],
                "max_loop_depth": depth,
                "lines_of_code": facts.lines_of_code,
            },
            "confidence": _confidence(facts),
        },
        "quality": assessed,
        "structure": {
            "functions": [function.as_dict() for function in facts.functions],
            "imports": facts.imports,
            "inputs_read": [
                {"key": read.key, "required": read.required, "type": read.type, "line": read.line,
                 **({"default": read.default} if read.has_default else {})}
                for read in sorted(facts.inputs.values(), key=lambda r: r.line)
            ],
            "outputs_produced": [{"key": key, "schema": schema} for key, schema in facts.outputs.items()],
            "dynamic_inputs": facts.dynamic_inputs,
            "dynamic_outputs": facts.dynamic_outputs,
        },
    }
