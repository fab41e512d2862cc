"""Offline review: contract, safety, robustness and style findings plus conformance to the spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tdev_common.llm.offline.checks import all_findings, quality
from tdev_common.llm.offline.codeinfo import CodeFacts, collect


def _spec_keys(spec: Mapping[str, Any], which: str) -> tuple[set[str], set[str]]:
    schema = spec.get(which)
    if not isinstance(schema, Mapping):
        return set(), set()
    properties = set((schema.get("properties") or {}).keys())
    required = set(schema.get("required") or [])
    return properties | required, required


def conformance_findings(facts: CodeFacts, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Inputs the code needs that the spec does not give; outputs the spec requires that the code lacks."""
    found: list[dict[str, Any]] = []
    known_in, _required_in = _spec_keys(spec, "input_schema")
    if known_in and not facts.dynamic_inputs:
        for key, read in facts.inputs.items():
            if read.required and key not in known_in:
                found.append({"severity": "error", "category": "correctness", "line": read.line,
                              "message": f"reads input {key!r}, which the spec does not provide"})
    _known_out, required_out = _spec_keys(spec, "output_schema")
    if required_out and not facts.dynamic_outputs:
        for key in sorted(required_out - set(facts.outputs)):
            found.append({"severity": "error", "category": "correctness", "line": None,
                          "message": f"never returns output {key!r}, which the spec requires"})
    return found


def review(code: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """REVIEW_SCHEMA answer: reject on syntax errors or unsafe code, request changes on other errors."""
    try:
        facts = collect(code)
    except SyntaxError as error:
        finding = {"severity": "error", "category": "syntax", "line": error.lineno,
                   "message": f"does not parse: {error.msg}"}
        return {"verdict": "reject", "score": 0.0, "summary": "The code does not parse.", "findings": [finding]}
    findings = all_findings(facts)
    if spec:
        findings = conformance_findings(facts, spec) + findings
    assessed = quality(facts, findings)
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    if any(f["category"] == "security" for f in errors):
        verdict = "reject"
    elif errors:
        verdict = "request_changes"
    else:
        verdict = "approve"
    summary = (f"{verdict.replace('_', ' ')}: {len(errors)} errors, {len(warnings)} warnings, "
               f"{len(findings) - len(errors) - len(warnings)} notes (static review, not a model)")
    return {"verdict": verdict, "score": assessed["score"], "summary": summary, "findings": findings}
