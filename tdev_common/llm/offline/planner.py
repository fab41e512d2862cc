"""Offline agent planning: detected steps -> agents with schemas, wiring, computed examples and reuse."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdev_common.llm.errors import OfflineUnsupported
from tdev_common.llm.offline.examples import Fit, fit, kind_of_value, readings, single_step_readings
from tdev_common.llm.offline.rules import Context, Step, detect_steps
from tdev_common.llm.offline.samples import workflow_samples
from tdev_common.llm.offline.templates import TEMPLATES, key_schema, object_schema

SUPPORTED_KINDS = (
    "text pipelines: normalise whitespace, lower/upper/title case, strip punctuation, replace 'a' with 'b', "
    "truncate to N characters, reverse, tokenize, remove stopwords, count words/characters/sentences/lines, "
    "most frequent words or letters, extract e-mails/URLs/numbers, slugify, palindrome check",
    "number lists: mean, median, min, max, sum, range, standard deviation, variance, mode, count; filter "
    "(even/odd/positive/negative/greater than N/...), sort, remove duplicates, add/subtract/multiply/divide/"
    "square, min-max normalise, round, Celsius <-> Fahrenheit",
    "JSON records: rename/select/drop fields, flatten nested objects, filter records where a field "
    "compares to a value, sort by a field, count by a field, statistics of a field, parse CSV text",
)


@dataclass
class PlannedAgent:
    """One node of the plan."""

    id: str
    template: str
    params: dict[str, Any]
    name: str
    inputs: dict[str, str]
    produces: tuple[str, ...]
    depends_on: list[str] = field(default_factory=list)


@dataclass
class Pipeline:
    """The wired agents, the workflow's external inputs and the steps they came from."""

    agents: list[PlannedAgent]
    input_keys: list[str]
    steps: list[Step]
    outputs: dict[str, str]


def unsupported(requirements: str) -> OfflineUnsupported:
    """The error naming what the offline planner understands."""
    excerpt = " ".join(requirements.split())[:120]
    return OfflineUnsupported(
        f"the offline provider (rules and templates, not a model) found no supported step in {excerpt!r}. "
        "It understands: " + "; ".join(SUPPORTED_KINDS) + ". Configure an LLM provider for anything else.")


def wire(requirements: str, steps: list[Step] | None = None) -> Pipeline:
    """Detects steps (or takes a reading of them), inserts adapters (tokenize, extract numbers, pluck a field)
    and wires the data flow.

    Raises:
        OfflineUnsupported: when no step is recognised, or numbers must come from records with no field named.
    """
    steps = detect_steps(requirements) if steps is None else steps
    if not steps:
        raise unsupported(requirements)
    ctx = Context.of(requirements)
    available: dict[str, str] = {}
    produced: set[str] = set()
    input_keys: list[str] = []
    agents: list[PlannedAgent] = []
    used_ids: dict[str, int] = {}
    used_names: dict[str, int] = {}
    all_steps: list[Step] = []

    def external(key: str) -> None:
        available[key] = f"inputs.{key}"
        input_keys.append(key)

    def add(step: Step) -> None:
        template = TEMPLATES[step.template]
        params = template.params(step.params)
        for key in template.consumes(params):
            if key not in available:
                external(key)
        count = used_ids.get(step.template, 0) + 1
        used_ids[step.template] = count
        node_id = step.template if count == 1 else f"{step.template}_{count}"
        base_name = template.class_name(params)
        name_count = used_names.get(base_name, 0) + 1
        used_names[base_name] = name_count
        name = base_name if name_count == 1 else f"{base_name}{name_count}"
        inputs = {key: available[key] for key in template.consumes(params)}
        depends = sorted({ref.split(".")[1] for ref in inputs.values() if ref.startswith("nodes.")})
        produces = template.produces(params)
        agents.append(PlannedAgent(node_id, step.template, params, name, inputs, produces, depends))
        all_steps.append(Step(step.template, params, step.start, step.end, step.phrase, step.extra))
        for key in produces:
            available[key] = f"nodes.{node_id}.output.{key}"
            produced.add(key)

    for step in steps:
        template = TEMPLATES[step.template]
        params = template.params(step.params)
        needs = template.consumes(params)
        if len(step.extra.get("fields", ())) > 1:
            raise OfflineUnsupported("the offline planner computes statistics of one field per requirement; "
                                     f"this one names {', '.join(step.extra['fields'])}")
        if "numbers" in needs and "numbers" not in available:
            field_name = step.extra.get("field")
            if field_name or "records" in available:
                if not field_name:
                    raise OfflineUnsupported("the offline planner needs the field to compute numbers from "
                                             "records, e.g. 'the average of the price field'")
                if "records" not in available:
                    external("records")
                add(Step("pluck_field", {"field": field_name, "out_key": "numbers"}, step.start, step.start,
                         f"values of {field_name}"))
            elif "text" in produced:
                add(Step("extract_numbers", {}, step.start, step.start, "numbers in the text"))
        if "words" in needs and "words" not in available and not ctx.words_input:
            if "text" not in available:
                external("text")
            add(Step("tokenize_words", {"lowercase": True}, step.start, step.start, "split into words"))
        add(step)

    consumed = {ref for agent in agents for ref in agent.inputs.values()}
    outputs: dict[str, str] = {}
    for agent in agents:
        for key in agent.produces:
            ref = f"nodes.{agent.id}.output.{key}"
            if ref not in consumed:
                outputs[key] = ref
    return Pipeline(agents, input_keys, all_steps, outputs)


def _resolve(ref: str, workflow_input: dict[str, Any], results: dict[str, dict[str, Any]]) -> Any:
    parts = ref.split(".")
    if parts[0] == "inputs":
        return workflow_input[parts[1]]
    return results[parts[1]][parts[3]]


def run_pipeline(pipeline: Pipeline, workflow_input: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Runs the reference implementations; returns each agent's input and output by node id."""
    results: dict[str, dict[str, Any]] = {}
    trace: dict[str, dict[str, Any]] = {}
    for agent in pipeline.agents:
        agent_input = {key: copy.deepcopy(_resolve(ref, workflow_input, results))
                       for key, ref in agent.inputs.items()}
        output = TEMPLATES[agent.template].run(copy.deepcopy(agent_input), agent.params)
        results[agent.id] = output
        trace[agent.id] = {"input": agent_input, "output": output}
    return trace


def _reuse(agent: PlannedAgent, catalogue: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A catalogue agent built from the same template and parameters, or with the same name and keys."""
    template = TEMPLATES[agent.template]
    want_in = set(template.consumes(agent.params))
    want_out = set(agent.produces)
    for entry in catalogue:
        same_template = entry.get("template") == agent.template and entry.get("parameters", agent.params) == \
            agent.params
        same_name = str(entry.get("name", "")).lower() == agent.name.lower()
        if not (same_template or same_name):
            continue
        keys_in = set((entry.get("input_schema") or {}).get("required", want_in))
        keys_out = set((entry.get("output_schema") or {}).get("required", want_out))
        if keys_in == want_in and keys_out == want_out and entry.get("agent_id"):
            return {"agent_id": str(entry["agent_id"]), "version": str(entry.get("version", "")),
                    "name": str(entry.get("name", agent.name))}
    return None


def kind_of(pipeline: Pipeline) -> str:
    """text_pipeline, number_statistics, number_pipeline, json_reshaping or mixed."""
    groups = set()
    for agent in pipeline.agents:
        keys = set(TEMPLATES[agent.template].consumes(agent.params))
        if keys & {"record", "records"}:
            groups.add("json_reshaping")
        elif keys & {"text", "words"}:
            groups.add("text_pipeline")
        elif agent.template == "statistics":
            groups.add("number_statistics")
        else:
            groups.add("number_pipeline")
    if groups == {"number_statistics", "number_pipeline"}:
        return "number_statistics"
    return groups.pop() if len(groups) == 1 else "mixed"


def choose(requirements: str, cases: Sequence[Mapping[str, Any]]) -> tuple[Pipeline, Fit, int] | None:
    """The first reading of the requirements (the rules' own, then alternatives, fewest changes first; with no
    step recognised, single templates) that reproduces every acceptance case, with how many were tried."""
    shown = {kind_of_value(value) for case in cases for value in (case.get("inputs") or {}).values()}
    steps = detect_steps(requirements, records=bool(shown & {"records", "record"}))
    tried = 0
    for reading in itertools.chain(readings(steps) if steps else (), single_step_readings(cases)):
        tried += 1
        try:
            pipeline = wire(requirements, reading)
        except OfflineUnsupported:
            continue
        found = fit(reading, pipeline, run_pipeline, cases)
        if found is not None:
            return pipeline, found, tried
    return None


def _adapted(pipeline: Pipeline, found: Fit) -> Pipeline:
    """The pipeline under the cases' names: inputs renamed, outputs as the cases expect, unused agents dropped."""
    rename = {f"inputs.{key}": f"inputs.{source}" for key, source in found.input_names.items()}
    needed: set[str] = {ref.split(".")[1] for ref in found.outputs.values()}
    by_id = {agent.id: agent for agent in pipeline.agents}
    pending = list(needed)
    while pending:
        for ref in by_id[pending.pop()].inputs.values():
            if ref.startswith("nodes.") and ref.split(".")[1] not in needed:
                needed.add(ref.split(".")[1])
                pending.append(ref.split(".")[1])
    agents = [PlannedAgent(a.id, a.template, a.params, a.name, {k: rename.get(r, r) for k, r in a.inputs.items()},
                           a.produces, a.depends_on) for a in pipeline.agents if a.id in needed]
    used = {ref.split(".")[1] for agent in agents for ref in agent.inputs.values() if ref.startswith("inputs.")}
    keys = [found.input_names[key] for key in pipeline.input_keys if found.input_names[key] in used]
    return Pipeline(agents, keys, pipeline.steps, dict(found.outputs))


def plan(requirements: str, catalogue: Sequence[dict[str, Any]] = (),
         cases: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """AGENT_PLAN_SCHEMA answer for the requirements; with acceptance cases, the reading that meets them.

    Without a reading that meets the cases the rules' own reading is planned (the build then fails on its
    cases, naming them), so a plan is never bent to look right.

    Raises:
        OfflineUnsupported: nothing recognised, or fewer than two sample inputs run through the pipeline.
    """
    chosen = choose(requirements, cases) if cases else None
    names: dict[str, str] = {}
    note = ""
    if chosen is not None:
        original, found, tried = chosen
        pipeline = _adapted(original, found)
        names = {key: source for key, source in found.input_names.items() if source in pipeline.input_keys}
        note = (f"reading {tried} of the requirements meets all {len(cases)} acceptance cases: "
                + ", ".join(f"{s.template}({', '.join(f'{k}={v!r}' for k, v in sorted(s.params.items()))})"
                            for s in found.steps))
    else:
        shown = {kind_of_value(value) for case in cases for value in (case.get("inputs") or {}).values()}
        hinted = detect_steps(requirements, records=bool(shown & {"records", "record"}))
        pipeline = wire(requirements, hinted if hinted else None)
        if cases:
            note = "no reading of the requirements met every acceptance case; planned the rules' own reading"
    runs: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []
    sample_keys = [key for key, source in names.items()] if names else pipeline.input_keys
    for raw in workflow_samples(pipeline.steps, sample_keys):
        sample = {names.get(key, key): value for key, value in raw.items()}
        try:
            runs.append((sample, run_pipeline(pipeline, sample)))
        except (ValueError, TypeError, KeyError, ArithmeticError):
            continue  # e.g. a filter left nothing to average: not a useful example
    case_runs: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []
    if chosen is not None:
        for case in cases:
            given = {key: (case.get("inputs") or {}).get(key) for key in pipeline.input_keys}
            case_runs.append((given, run_pipeline(pipeline, given)))
    if len(runs) < 2 and len(runs) + len(case_runs) < 2:
        raise OfflineUnsupported("the offline planner could not derive two working examples for this pipeline")
    agents = []
    for agent in pipeline.agents:
        template = TEMPLATES[agent.template]
        agents.append({
            "id": agent.id,
            "name": agent.name,
            "purpose": template.describe(agent.params),
            "input_schema": template.input_schema(agent.params),
            "output_schema": template.output_schema(agent.params),
            "examples": _unique([{"input": trace[agent.id]["input"], "expected_output": trace[agent.id]["output"]}
                                 for _sample, trace in [*runs, *case_runs]]),
            "inputs": dict(agent.inputs),
            "depends_on": list(agent.depends_on),
            "implementation": {"template": agent.template, "params": dict(agent.params)},
            "reuse": _reuse(agent, catalogue),
        })
    data_flow = [{"from": ref, "to": f"nodes.{agent.id}.inputs.{key}"}
                 for agent in pipeline.agents for key, ref in agent.inputs.items()]
    data_flow += [{"from": ref, "to": f"outputs.{key}"} for key, ref in pipeline.outputs.items()]
    examples = []
    for sample, trace in runs:
        output = {key: trace[ref.split(".")[1]]["output"][ref.split(".")[3]] for key, ref in pipeline.outputs.items()}
        examples.append({"input": sample, "expected_output": output})
    answer = {
        "kind": kind_of(pipeline),
        "agents": agents,
        "data_flow": data_flow,
        "workflow_input_schema": object_schema(tuple(pipeline.input_keys)),
        "workflow_output_schema": {"type": "object", "required": list(pipeline.outputs), "properties": {
            key: key_schema(ref.split(".")[3]) for key, ref in pipeline.outputs.items()}},
        "outputs": dict(pipeline.outputs),
        "examples": examples,
    }
    if note:
        answer["interpretation"] = note
    return answer


def _unique(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for example in examples:
        if example not in seen:
            seen.append(example)
    return seen
