"""The service package: a README a person can follow, with a grpcurl and a CLI example."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from builder_svc.domain import PackagedAgent, Usage, ValidationCase


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _cli_inputs(inputs: Mapping[str, Any]) -> str:
    """``-i key=value`` pairs as `tdev workflows run` reads them (JSON values, bare strings as such)."""
    parts = []
    for key, value in inputs.items():
        raw = value if isinstance(value, str) and not _parses_as_json(value) else _json(value)
        parts.append(f"-i {shlex.quote(f'{key}={raw}')}")
    return " ".join(parts)


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _cell(value: Any, limit: int = 80) -> str:
    text = _json(value).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def readme(*, service_id: str, build_id: str, workflow_id: str, workflow_version: str, requirements: str,
           analysis: Mapping[str, Any], agents: Sequence[PackagedAgent], agent_names: Mapping[str, str],
           input_schema: Mapping[str, Any], output_schema: Mapping[str, Any], outputs: Mapping[str, str],
           report: Sequence[ValidationCase], usage: Usage, build_seconds: float, workflow_address: str,
           validation_basis: str = "") -> str:
    """Markdown README of a built service."""
    example = report[0] if report else None
    sample_inputs = example.inputs if example else {}
    quoted = "\n".join(f"> {line}" if line else ">" for line in requirements.strip().splitlines())
    lines = [
        f"# {analysis.get('summary') or service_id}",
        "",
        f"Service `{service_id}`, built by T-Developer (build `{build_id}`) from these requirements:",
        "",
        quoted,
        "",
        f"It runs as workflow `{workflow_id}` version `{workflow_version}` in the workflow service.",
        "",
        "## What it does",
        "",
    ]
    for requirement in analysis.get("functional_requirements") or []:
        lines.append(f"- **{requirement.get('id', '')}** {requirement.get('description', '')}")
    for requirement in analysis.get("non_functional_requirements") or []:
        lines.append(f"- *{requirement.get('category', '')}*: {requirement.get('description', '')}")
    for assumption in analysis.get("assumptions") or []:
        lines.append(f"- Assumption: {assumption}")
    lines += ["", "## Agents", "", "| node | agent | agent_id | version | origin | fix attempts |",
              "|---|---|---|---|---|---|"]
    for agent in agents:
        origin = "reused from the registry" if agent.reused else "generated"
        lines.append(f"| `{agent.node_id}` | {agent_names.get(agent.node_id, agent.spec_name)} | `{agent.agent_id}` "
                     f"| {agent.version} | {origin} | {agent.fix_attempts} |")
    lines += ["", "## Inputs", "", "```json", json.dumps(input_schema, indent=2, sort_keys=True), "```", "",
              "## Outputs", "", "```json", json.dumps(output_schema, indent=2, sort_keys=True), "```", ""]
    if outputs:
        lines += ["Each output comes from one agent:", ""]
        lines += [f"- `{key}` <- `{ref}`" for key, ref in outputs.items()]
        lines.append("")
    request = _json({"workflow_id": workflow_id, "inputs": sample_inputs})
    lines += [
        "## Call it",
        "",
        "With grpcurl (server reflection is on), streaming progress and the outputs:",
        "",
        "```sh",
        f"grpcurl -plaintext -d {shlex.quote(request)} {workflow_address} "
        "tdev.workflow.v1.WorkflowService/ExecuteWorkflow",
        "```",
        "",
        "With the CLI:",
        "",
        "```sh",
        f"tdev workflows run {workflow_id} {_cli_inputs(sample_inputs)} --follow".replace("  ", " "),
        "```",
        "",
        "## Validation",
        "",
    ]
    if validation_basis:
        lines += [f"**{validation_basis[0].upper() + validation_basis[1:]}.**", ""]
    lines += [
        "| # | origin | inputs | expected | actual | result |",
        "|---|---|---|---|---|---|",
    ]
    for index, case in enumerate(report, 1):
        expected = _cell(case.expected) if case.expected is not None else "(outputs checked against the schema)"
        origin = case.origin or "derived"
        if case.origin == "acceptance":
            origin = f"acceptance{f' {case.name!r}' if case.name else ''} ({case.comparison.replace('_', ' ')})"
        lines.append(f"| {index} | {origin} | {_cell(case.inputs)} | {expected} | {_cell(case.actual)} | "
                     f"{'passed' if case.passed else 'failed (reported, not required)'} |")
    models = ", ".join(usage.models) or "none"
    lines += [
        "",
        "## Build",
        "",
        f"- Time: {build_seconds:.2f} s",
        f"- LLM calls: {usage.calls}; tokens: {usage.input_tokens} in, {usage.output_tokens} out; "
        f"cost: ${usage.cost_usd:.6f}",
        f"- Models: {models}",
        "",
    ]
    return "\n".join(lines)
