"""Offline requirement analysis by rules: functional and non-functional requirements, constraints,
integration points and assumptions (REQUIREMENTS_ANALYSIS_SCHEMA)."""

from __future__ import annotations

import re
from typing import Any

from tdev_common.errors import FailedPrecondition
from tdev_common.llm.offline.planner import Pipeline, kind_of, wire
from tdev_common.llm.offline.rules import Context
from tdev_common.llm.offline.templates import TEMPLATES

_I = re.IGNORECASE
_NFR_RULES = [
    ("performance", r"\b(fast|quick(?:ly)?|latency|within\s+\d+\s*(?:ms|milliseconds|seconds?|s)\b|real[-\s]?time|"
                    r"efficient|throughput|per\s+second)"),
    ("reliability", r"\b(reliab\w*|robust\w*|retr(?:y|ies)|fault[-\s]toleran\w*|never\s+fail|gracefully|"
                    r"invalid\s+input|malformed)"),
    ("security", r"\b(secur\w*|sensitive|password|secret|pii|personal\s+data|encrypt\w*|private|gdpr)"),
    ("scalability", r"\b(scal\w*|large\s+(?:inputs?|files?|volumes?|lists?|texts?)|millions?|big\s+data)"),
    ("usability", r"\b(readable|human[-\s]readable|user[-\s]friendly|clear\s+(?:error|message)s?)"),
    ("maintainability", r"\b(maintainab\w*|documented|tested|clean\s+code|modular)"),
    ("determinism", r"\b(deterministic|reproducible|same\s+(?:input|output)|idempotent)"),
]
_EXTERNAL_RULES = [
    ("HTTP API", r"\b(https?\s+api|rest(?:ful)?\s+api|web\s*service|endpoint|webhook|http\s+request)"),
    ("database", r"\b(database|sql|postgres\w*|mysql|dynamodb|mongo\w*|table\s+in)"),
    ("object storage", r"\b(s3|bucket|blob\s+storage)"),
    ("e-mail delivery", r"\b(send\w*\s+(?:an?\s+)?e-?mails?|smtp|notify\s+by\s+e-?mail)"),
    ("file system", r"\b(read\w*\s+(?:from\s+)?(?:a\s+)?files?|write\w*\s+(?:to\s+)?(?:a\s+)?files?|disk)\b"),
    ("message queue", r"\b(queue|kafka|sqs|pub/?sub|rabbitmq)"),
]
_CONSTRAINT = re.compile(r"\b(must|must\s+not|should\s+not|shall|only|never|without|no\s+more\s+than|at\s+most|"
                         r"at\s+least|limit\w*|do\s+not|don't)\b", _I)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?;])\s+|\n+", text) if s.strip()]


def _assumptions(pipeline: Pipeline | None, text: str) -> list[str]:
    found: list[str] = []
    if pipeline is None:
        return ["The requirements name no step the offline rules recognise; an LLM provider is needed to plan "
                "agents for them."]
    for agent in pipeline.agents:
        params = agent.params
        if agent.template in ("word_frequency", "character_frequency") and not re.search(
                r"\btop\s+\w+|\b(?:\d+|two|three|four|five|six|seven|eight|nine|ten)\s+most\s+(?:frequent|common)",
                text, _I):
            found.append(f"How many frequent items to report is not stated; {params['top_n']} are reported, "
                         "ties broken alphabetically.")
        if agent.template == "tokenize_words":
            found.append("Words are runs of letters and digits (inner apostrophes kept), compared lowercased.")
        if agent.template == "statistics":
            if "stddev" in params["measures"] or "variance" in params["measures"]:
                kind = "sample" if params["sample"] else "population"
                found.append(f"Standard deviation and variance are the {kind} versions.")
            found.append(f"Statistics are rounded to {params['precision']} decimals; an empty list is an error.")
        if agent.template == "count_characters" and params["mode"] == "all":
            found.append("Every character counts, including spaces and punctuation.")
        if agent.template in ("rename_fields", "select_fields", "drop_fields", "flatten_record"):
            shape = "a list of records under 'records'" if params["key"] == "records" else "one record under 'record'"
            found.append(f"The input is {shape}.")
        if agent.template == "parse_csv":
            found.append("The CSV text has a header row; numeric cells become numbers.")
        if agent.template == "filter_records":
            found.append("Records without the filtered field are dropped.")
    if any(key == "text" for key in pipeline.input_keys):
        found.append("The input text is UTF-8 and fits in memory.")
    return list(dict.fromkeys(found))


def analyse_requirements(requirements: str) -> dict[str, Any]:
    """REQUIREMENTS_ANALYSIS_SCHEMA answer; steps found by the rules become functional requirements."""
    text = " ".join(requirements.split())
    try:
        pipeline: Pipeline | None = wire(requirements)
    except FailedPrecondition:
        pipeline = None
    functional: list[dict[str, Any]] = []
    if pipeline is not None:
        for agent in pipeline.agents:
            functional.append({"id": f"FR{len(functional) + 1}",
                               "description": TEMPLATES[agent.template].describe(agent.params), "priority": "must"})
        functional.append({"id": f"FR{len(functional) + 1}",
                           "description": f"Accept {', '.join(pipeline.input_keys)} as input and return "
                                          f"{', '.join(pipeline.outputs)}.", "priority": "must"})
    else:
        for sentence in _sentences(requirements):
            functional.append({"id": f"FR{len(functional) + 1}", "description": sentence, "priority": "must"})
    non_functional: list[dict[str, Any]] = []
    for category, pattern in _NFR_RULES:
        match = re.search(pattern, text, _I)
        if match:
            around = next((s for s in _sentences(requirements) if match.group(0) in s), match.group(0))
            non_functional.append({"id": f"NFR{len(non_functional) + 1}", "category": category,
                                   "description": around})
    if not any(n["category"] == "determinism" for n in non_functional):
        non_functional.append({"id": f"NFR{len(non_functional) + 1}", "category": "determinism",
                               "description": "The same input gives the same output (examples are exact)."})
    constraints = [s for s in _sentences(requirements) if _CONSTRAINT.search(s)]
    constraints.append("Agents use only the Python standard library and run in the sandbox (no network, no files).")
    integration: list[dict[str, Any]] = []
    if pipeline is not None:
        for key in pipeline.input_keys:
            integration.append({"name": key, "direction": "input",
                                "description": f"workflow input '{key}' ({_describe_key(key)})"})
        for key in pipeline.outputs:
            integration.append({"name": key, "direction": "output", "description": f"workflow output '{key}'"})
    for name, pattern in _EXTERNAL_RULES:
        if re.search(pattern, text, _I):
            integration.append({"name": name, "direction": "external",
                                "description": f"the requirements mention {name}; agents cannot reach it from "
                                               "the sandbox, so it stays with the caller"})
    kind = kind_of(pipeline) if pipeline is not None else "unsupported"
    steps = " -> ".join(agent.id for agent in pipeline.agents) if pipeline is not None else "none recognised"
    ctx = Context.of(requirements)
    summary = f"{kind.replace('_', ' ')}: {steps}" + (" (JSON records)" if ctx.records and pipeline else "")
    return {
        "summary": summary,
        "kind": kind,
        "functional_requirements": functional,
        "non_functional_requirements": non_functional,
        "constraints": constraints,
        "integration_points": integration,
        "assumptions": _assumptions(pipeline, requirements),
    }


def _describe_key(key: str) -> str:
    return {"text": "a string", "words": "a list of strings", "numbers": "a list of numbers",
            "record": "a JSON object", "records": "a list of JSON objects"}.get(key, "a JSON value")
