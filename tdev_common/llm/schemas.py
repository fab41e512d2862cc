"""The JSON shapes every purpose answers in (models and the offline provider alike), as JSON Schemas.

Services import these: pass the schema to ``complete(..., schema=...)`` and build the messages with
``tdev_common.llm.prompts``. The payload TypedDicts describe what each prompt carries.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

JSONSchema = dict[str, Any]

_STRINGS: JSONSchema = {"type": "array", "items": {"type": "string"}}
_UNIT: JSONSchema = {"type": "number", "minimum": 0, "maximum": 1}
_LINE: JSONSchema = {"type": ["integer", "null"], "minimum": 1}

FINDING_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["severity", "message"],
    "properties": {
        "severity": {"enum": ["info", "warning", "error"]},
        "category": {"type": "string"},
        "message": {"type": "string", "minLength": 1},
        "line": _LINE,
    },
}

# ---- analysis: what an agent does and how good its code is -------------------------------------------
CAPABILITIES_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["summary", "input_schema", "output_schema", "dependencies", "estimated_performance",
                 "confidence"],
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "dependencies": _STRINGS,
        "estimated_performance": {
            "type": "object",
            "required": ["time_complexity"],
            "properties": {
                "time_complexity": {"type": "string"},
                "cyclomatic_complexity": {"type": "integer", "minimum": 1},
                "max_loop_depth": {"type": "integer", "minimum": 0},
                "lines_of_code": {"type": "integer", "minimum": 0},
            },
        },
        "confidence": _UNIT,
    },
}

QUALITY_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["score", "issues"],
    "properties": {
        "score": _UNIT,
        "documentation": _UNIT,
        "type_hints": _UNIT,
        "max_complexity": {"type": "integer", "minimum": 1},
        "issues": {"type": "array", "items": FINDING_SCHEMA},
    },
}

ANALYSIS_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["capabilities", "quality"],
    "properties": {
        "agent_class": {"type": ["string", "null"]},
        "capabilities": CAPABILITIES_SCHEMA,
        "quality": QUALITY_SCHEMA,
        # Offline only: functions, imports, inputs read, outputs produced (models may omit it).
        "structure": {"type": "object"},
    },
}

# ---- requirements: analysis, then the agents that implement them ------------------------------------
REQUIREMENTS_ANALYSIS_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["summary", "functional_requirements", "non_functional_requirements", "constraints",
                 "integration_points", "assumptions"],
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "kind": {"type": "string"},
        "functional_requirements": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "description"],
                "properties": {"id": {"type": "string"}, "description": {"type": "string"},
                               "priority": {"enum": ["must", "should", "could"]}},
            },
        },
        "non_functional_requirements": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "category", "description"],
                "properties": {"id": {"type": "string"}, "category": {"type": "string"},
                               "description": {"type": "string"}},
            },
        },
        "constraints": _STRINGS,
        "integration_points": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "direction", "description"],
                "properties": {"name": {"type": "string"},
                               "direction": {"enum": ["input", "output", "external"]},
                               "description": {"type": "string"}},
            },
        },
        "assumptions": _STRINGS,
    },
}

EXAMPLE_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["input", "expected_output"],
    "properties": {"input": {"type": "object"}, "expected_output": {"type": "object"}},
}

AGENT_SPEC_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["id", "name", "purpose", "input_schema", "output_schema", "examples", "inputs", "depends_on"],
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "name": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
        "purpose": {"type": "string", "minLength": 1},
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "examples": {"type": "array", "minItems": 2, "items": EXAMPLE_SCHEMA},
        # Workflow references (DESIGN §5) without the $ref wrapper: "inputs.text", "nodes.tokenize.output.words".
        "inputs": {"type": "object", "additionalProperties": {"type": "string"}},
        "depends_on": _STRINGS,
        "implementation": {
            "type": "object",
            "required": ["template"],
            "properties": {"template": {"type": "string"}, "params": {"type": "object"}},
        },
        "reuse": {
            "type": ["object", "null"],
            "properties": {"agent_id": {"type": "string"}, "version": {"type": "string"},
                           "name": {"type": "string"}},
        },
    },
}

AGENT_PLAN_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["agents", "data_flow", "workflow_input_schema", "outputs"],
    "properties": {
        "kind": {"type": "string"},
        "agents": {"type": "array", "minItems": 1, "items": AGENT_SPEC_SCHEMA},
        "data_flow": {
            "type": "array",
            "items": {"type": "object", "required": ["from", "to"],
                      "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
        },
        "workflow_input_schema": {"type": "object"},
        "workflow_output_schema": {"type": "object"},
        "outputs": {"type": "object", "additionalProperties": {"type": "string"}},
        "examples": {"type": "array", "items": EXAMPLE_SCHEMA},
    },
}

# ---- code: generation, repair, mutation, review ------------------------------------------------------
CODEGEN_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["code", "class_name"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "class_name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "template": {"type": ["string", "null"]},
        "notes": _STRINGS,
    },
}

REPAIR_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["code", "changed", "diagnosis", "fixes"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "changed": {"type": "boolean"},
        "diagnosis": {"type": "string"},
        "fixes": {
            "type": "array",
            "items": {"type": "object", "required": ["kind", "description"],
                      "properties": {"kind": {"type": "string"}, "description": {"type": "string"},
                                     "line": _LINE}},
        },
    },
}

MUTATION_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["code", "operations"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "operations": {
            "type": "array",
            "items": {"type": "object", "required": ["kind"],
                      "properties": {"kind": {"type": "string"}, "line": _LINE,
                                     "before": {"type": "string"}, "after": {"type": "string"},
                                     "description": {"type": "string"}}},
        },
        # Diff-style edits of the original code: each search text occurs exactly once when applied in order.
        "edits": {
            "type": "array",
            "items": {"type": "object", "required": ["search", "replace"],
                      "properties": {"search": {"type": "string", "minLength": 1}, "replace": {"type": "string"}}},
        },
        "seed": {"type": "integer"},
    },
}

REVIEW_SCHEMA: JSONSchema = {
    "type": "object",
    "required": ["verdict", "score", "summary", "findings"],
    "properties": {
        "verdict": {"enum": ["approve", "request_changes", "reject"]},
        "score": _UNIT,
        "summary": {"type": "string"},
        "findings": {"type": "array", "items": FINDING_SCHEMA},
    },
}

SCHEMAS: dict[str, JSONSchema] = {
    "analysis": ANALYSIS_SCHEMA,
    "requirements:analyse": REQUIREMENTS_ANALYSIS_SCHEMA,
    "requirements:plan": AGENT_PLAN_SCHEMA,
    "code_generation": CODEGEN_SCHEMA,
    "code_repair": REPAIR_SCHEMA,
    "mutation": MUTATION_SCHEMA,
    "review": REVIEW_SCHEMA,
}


def schema_for(purpose: str, task: str | None = None) -> JSONSchema:
    """The answer schema of a purpose (requirements needs its task: ``analyse`` or ``plan``).

    Raises:
        KeyError: for an unknown purpose or task.
    """
    return SCHEMAS[f"{purpose}:{task}" if task else purpose]


# ---- payloads: what the prompts of tdev_common.llm.prompts carry ------------------------------------------
class AgentExample(TypedDict):
    """One example of an agent: input -> expected output."""

    input: dict[str, Any]
    expected_output: dict[str, Any]


class AgentSpec(TypedDict):
    """One agent of a plan (AGENT_SPEC_SCHEMA)."""

    id: str
    name: str
    purpose: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    examples: list[AgentExample]
    inputs: dict[str, str]
    depends_on: list[str]
    implementation: NotRequired[dict[str, Any]]
    reuse: NotRequired[dict[str, Any] | None]


class CatalogueEntry(TypedDict):
    """A registry agent offered to the planner for reuse."""

    agent_id: str
    version: str
    name: str
    description: str
    input_schema: NotRequired[dict[str, Any]]
    output_schema: NotRequired[dict[str, Any]]
    template: NotRequired[str]


class Failure(TypedDict):
    """Why generated or evolved code failed, as the repair purpose receives it."""

    kind: Literal["exception", "wrong_output", "invalid_output", "timeout", "contract", "syntax"]
    exception_type: NotRequired[str]
    message: NotRequired[str]
    traceback: NotRequired[str]
    input: NotRequired[dict[str, Any]]
    expected_output: NotRequired[Any]
    actual_output: NotRequired[Any]
