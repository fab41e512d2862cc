"""Offline code generation: an agent spec -> agent source from the template library."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from common.llm.errors import OfflineUnsupported
from common.llm.offline.rules import detect_steps
from common.llm.offline.templates import TEMPLATES, Template


def class_name_for(name: str, fallback: str) -> str:
    """A CamelCase Python identifier from a spec name."""
    parts = re.findall(r"[A-Za-z0-9]+", name or "")
    candidate = "".join(part[:1].upper() + part[1:] for part in parts)
    if not candidate or not candidate[0].isalpha():
        candidate = fallback
    return candidate


def _required(schema: Any) -> set[str] | None:
    if isinstance(schema, Mapping) and isinstance(schema.get("required"), list):
        return {str(key) for key in schema["required"]}
    if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
        return {str(key) for key in schema["properties"]}
    return None


def _reproduces(template: Template, params: dict[str, Any], examples: list[Any]) -> bool:
    for example in examples:
        if not isinstance(example, Mapping):
            return False
        try:
            output = template.run(copy.deepcopy(dict(example.get("input", {}))), params)
        except Exception:  # the reference raising means "this template does not fit"
            return False
        if output != example.get("expected_output"):
            return False
    return True


def _keys_fit(template: Template, params: dict[str, Any], spec: Mapping[str, Any]) -> bool:
    wanted_in = _required(spec.get("input_schema"))
    wanted_out = _required(spec.get("output_schema"))
    if wanted_in is not None and wanted_in != set(template.consumes(params)):
        return False
    return wanted_out is None or wanted_out == set(template.produces(params))


def _candidates(spec: Mapping[str, Any]) -> list[tuple[Template, dict[str, Any]]]:
    """Templates to try: the spec's own hint, then steps found in its words, then every template."""
    found: list[tuple[Template, dict[str, Any]]] = []
    implementation = spec.get("implementation")
    if isinstance(implementation, Mapping) and implementation.get("template") in TEMPLATES:
        template = TEMPLATES[str(implementation["template"])]
        found.append((template, template.params(dict(implementation.get("params") or {}))))
    name_words = " ".join(re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", str(spec.get("name", ""))))
    for step in detect_steps(f"{spec.get('purpose', '')}. {name_words}"):
        template = TEMPLATES[step.template]
        found.append((template, template.params(step.params)))
    for template in TEMPLATES.values():
        found.append((template, template.params()))
    return found


def generate(spec: Mapping[str, Any]) -> dict[str, Any]:
    """CODEGEN_SCHEMA answer: the first template whose keys fit the spec and that reproduces its examples.

    Raises:
        OfflineUnsupported: no template fits (the message says why).
    """
    examples = list(spec.get("examples") or [])
    for template, params in _candidates(spec):
        if not _keys_fit(template, params, spec):
            continue
        if examples and not _reproduces(template, params, examples):
            continue
        name = class_name_for(str(spec.get("name", "")), template.class_name(params))
        purpose = str(spec.get("purpose") or template.describe(params))
        notes = [f"offline template {template.name!r} (not a model) with parameters {params}"]
        if examples:
            notes.append(f"reproduces all {len(examples)} examples of the spec")
        return {"code": template.render(params, class_name=name, description=purpose), "class_name": name,
                "template": template.name, "notes": notes}
    raise OfflineUnsupported(
        f"the offline provider has no template that fits agent {spec.get('name')!r}: none reads and returns the "
        "spec's keys and reproduces its examples; configure an LLM provider to generate it")
