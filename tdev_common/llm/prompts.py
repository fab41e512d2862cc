"""Prompt builders per purpose; each ends with a JSON payload that models read and the offline provider parses."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tdev_common.llm.base import Message
from tdev_common.llm.errors import BadPayload
from tdev_common.llm.schemas import AgentSpec, CatalogueEntry, Failure

PAYLOAD_MARKER = "TASK INPUT (JSON):"

AGENT_CONTRACT = (
    "An agent is Python source defining exactly one class with `execute(self, inputs: dict) -> dict`, "
    "`get_capabilities(self) -> dict` and an `__init__` taking no required arguments. Inputs and outputs "
    "are JSON values. Agents run in a sandbox with no network and no files: use only the Python standard "
    "library."
)


def _build(system: str, instruction: str, payload: dict[str, Any]) -> list[Message]:
    body = json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False)
    return [Message.system(system), Message.user(f"{instruction}\n\n{PAYLOAD_MARKER}\n{body}")]


def read_payload(messages: Sequence[Message]) -> dict[str, Any]:
    """The payload of the last user message that carries one.

    Raises:
        BadPayload: when no user message carries a JSON object after the marker.
    """
    for message in reversed(messages):
        if message.role != "user" or PAYLOAD_MARKER not in message.content:
            continue
        raw = message.content.rsplit(PAYLOAD_MARKER, 1)[1]
        try:
            payload = json.loads(raw)
        except ValueError as error:
            raise BadPayload(f"prompt payload is not JSON: {error}") from None
        if not isinstance(payload, dict):
            raise BadPayload("prompt payload must be a JSON object")
        return payload
    raise BadPayload(f"no user message carries a payload after {PAYLOAD_MARKER!r}; build prompts with "
                     "tdev_common.llm.prompts")


def analysis_messages(code: str, *, name: str | None = None) -> list[Message]:
    """Analyse an agent's code: capabilities and quality (answer: ANALYSIS_SCHEMA)."""
    system = ("You are a senior Python reviewer analysing agent code. " + AGENT_CONTRACT + " Describe what the "
              "agent does: a one-sentence summary, the JSON Schema of the inputs it reads and of the outputs it "
              "returns, the modules it imports, its time complexity, and your confidence. Then assess its "
              "quality in [0, 1] with concrete issues (severity, message, line).")
    payload: dict[str, Any] = {"code": code}
    if name:
        payload["name"] = name
    return _build(system, "Analyse this agent.", payload)


def requirements_analysis_messages(requirements: str) -> list[Message]:
    """Structured analysis of plain-language requirements (answer: REQUIREMENTS_ANALYSIS_SCHEMA)."""
    system = ("You are a requirements analyst. Split the requirements into functional requirements (each "
              "testable), non-functional requirements by category, constraints, integration points (inputs, "
              "outputs, external systems) and the assumptions you had to make. Do not invent features.")
    return _build(system, "Analyse these requirements.", {"task": "analyse", "requirements": requirements})


def agent_plan_messages(requirements: str, *, analysis: dict[str, Any] | None = None,
                        catalogue: Sequence[CatalogueEntry] = (),
                        acceptance_cases: Sequence[Mapping[str, Any]] = ()) -> list[Message]:
    """The agents implementing the requirements and their data flow (answer: AGENT_PLAN_SCHEMA)."""
    system = ("You design small agent pipelines. " + AGENT_CONTRACT + " Identify the fewest agents that "
              "implement the requirements. For each give: id (snake_case node id), name (CamelCase class "
              "name), purpose, input and output JSON Schemas, at least two examples of input -> expected "
              "output that a correct implementation reproduces exactly, `inputs` mapping each input key to "
              "\"inputs.<key>\" (a workflow input) or \"nodes.<id>.output.<key>\" (an earlier agent), and "
              "depends_on. When a catalogue agent fits exactly, set reuse to its agent_id and version. Give "
              "the workflow input schema, `outputs` mapping each workflow output key to a reference, and "
              "data_flow edges.")
    payload: dict[str, Any] = {"task": "plan", "requirements": requirements, "catalogue": list(catalogue)}
    if analysis is not None:
        payload["analysis"] = analysis
    if acceptance_cases:
        # The caller's cases decide what the requirements mean: a plan is only accepted when the workflow
        # reproduces them, so a model must read ambiguous wording the way the cases do.
        system += (" The caller gave acceptance_cases (workflow inputs -> expected workflow outputs, compared "
                   "as `comparison` says): use exactly their input and output key names, choose the reading "
                   "of the requirements that reproduces every case, and include the cases in the workflow "
                   "examples.")
        payload["acceptance_cases"] = [dict(case) for case in acceptance_cases]
    return _build(system, "Plan the agents for these requirements.", payload)


def codegen_messages(spec: AgentSpec | dict[str, Any]) -> list[Message]:
    """Write an agent from its spec (answer: CODEGEN_SCHEMA)."""
    system = ("You write production-quality Python agents. " + AGENT_CONTRACT + " The class name is the spec's "
              "name. execute must reproduce every example's expected_output exactly, validate its inputs, "
              "and get_capabilities must return the spec's purpose and schemas. Include docstrings and type "
              "hints.")
    return _build(system, "Write the agent for this spec.", {"spec": dict(spec)})


def repair_messages(code: str, failure: Failure | dict[str, Any], *,
                    spec: AgentSpec | dict[str, Any] | None = None) -> list[Message]:
    """Fix code from a failure (answer: REPAIR_SCHEMA)."""
    system = ("You fix Python agents. " + AGENT_CONTRACT + " Given the code, the failure (exception and "
              "traceback, or the wrong output next to the expected one) and the spec, return the whole "
              "corrected code, whether you changed it, a diagnosis and the list of fixes. Change as little "
              "as needed. When the spec lists failing_acceptance_cases (workflow inputs, the outputs the caller "
              "expects, what the service returned and how they are compared), the caller's cases are the "
              "authority: the fixed agent must make them pass while still passing its examples.")
    payload: dict[str, Any] = {"code": code, "failure": dict(failure)}
    if spec is not None:
        payload["spec"] = dict(spec)
    return _build(system, "Fix this agent.", payload)


def mutation_messages(code: str, *, seed: int, rate: float = 0.1, max_edits: int = 3) -> list[Message]:
    """A small variation of an agent for evolution (answer: MUTATION_SCHEMA)."""
    system = ("You propose small, plausible edits to a Python agent for an evolutionary search. " + AGENT_CONTRACT
              + " Keep the class name and the contract. Return the whole edited code, the list of "
              "operations (kind, line, before, after) and the edits as search/replace pairs whose search text "
              "occurs exactly once in the code.")
    payload = {"operation": "mutate", "code": code, "seed": seed, "rate": rate, "max_edits": max_edits}
    return _build(system, "Mutate this agent.", payload)


def crossover_messages(code: str, other_code: str, *, seed: int) -> list[Message]:
    """Combine two parents (answer: MUTATION_SCHEMA); the first parent's class name is kept."""
    system = ("You combine two versions of a Python agent for an evolutionary search. " + AGENT_CONTRACT
              + " Take methods or blocks from each parent, keep the first parent's class name, and return "
              "the whole code and the operations you applied.")
    payload = {"operation": "crossover", "code": code, "other_code": other_code, "seed": seed}
    return _build(system, "Cross these two agents.", payload)


def review_messages(code: str, *, spec: AgentSpec | dict[str, Any] | None = None) -> list[Message]:
    """Review an agent against its contract and spec (answer: REVIEW_SCHEMA)."""
    system = ("You review Python agents. " + AGENT_CONTRACT + " Check correctness against the spec, the "
              "contract, security (no eval/exec, no network, no subprocess, no files), error handling, "
              "documentation and style. Verdict approve, request_changes or reject; score in [0, 1].")
    payload: dict[str, Any] = {"code": code}
    if spec is not None:
        payload["spec"] = dict(spec)
    return _build(system, "Review this agent.", payload)
