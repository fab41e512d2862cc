"""Offline code generation: an agent spec -> agent source from the template library."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from tdev_common.llm.errors import OfflineUnsupported
from tdev_common.llm.offline.rules import detect_steps
from tdev_common.llm.offline.templates import TEMPLATES, Template


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


def _examples(spec: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = []
    for example in spec.get("examples") or []:
        if isinstance(example, Mapping) and isinstance(example.get("input"), Mapping) and isinstance(
                example.get("expected_output"), Mapping):
            pairs.append((dict(example["input"]), dict(example["expected_output"])))
    return pairs


def _records(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def _inferred(template: Template, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Parameter sets read off the spec's keys and examples (field names, mappings, measures, sizes)."""
    keys_in = sorted(_required(spec.get("input_schema")) or ())
    keys_out = sorted(_required(spec.get("output_schema")) or ())
    base = template.params()
    if "key" in base and len(keys_in) == 1:
        base["key"] = keys_in[0]
    if "out_key" in base and len(keys_out) == 1:
        base["out_key"] = keys_out[0]
    measures = [key for key in MEASURES_ORDER if key in keys_out]
    if "measures" in base and measures:
        base["measures"] = measures
    examples = _examples(spec)
    if "top_n" in base:
        lengths = [len(out.get(k) or []) for _inp, out in examples for k in ("top_words", "top_characters")
                   if isinstance(out.get(k), list)]
        if lengths:
            base["top_n"] = max(lengths)
    records_in = [r for inp, _out in examples for v in inp.values() for r in _records(v)]
    records_out = [r for _inp, out in examples for v in out.values() for r in _records(v)]
    if "mapping" in base and records_in and records_out:
        mapping = {a: b for a, b in zip(records_in[0], records_out[0], strict=False) if a != b}
        base["mapping"] = mapping
    if "fields" in base and records_in and records_out:
        kept = list(records_out[0])
        dropped = [name for name in records_in[0] if name not in records_out[0]]
        base["fields"] = dropped if template.name == "drop_fields" else kept
    if "separator" in base and records_out:
        joined = "".join(name for name in records_out[0] if not name.isidentifier() or "_" in name)
        base["separator"] = next((sep for sep in (".", "/", "_") if sep in joined), base["separator"])
    options = [base]
    if "field" in base:
        names = sorted({name for record in records_in for name in record})
        options = [{**base, "field": name} for name in names] or options
        if "descending" in base:
            options = [{**option, "descending": flag} for option in options for flag in (False, True)]
    return options


MEASURES_ORDER = ("count", "sum", "mean", "median", "min", "max", "range", "stddev", "variance", "mode")


def _candidates(spec: Mapping[str, Any]) -> list[tuple[Template, dict[str, Any]]]:
    """Templates to try: the spec's own hint, then steps found in its words, then every template with
    parameters inferred from the spec's keys and examples."""
    found: list[tuple[Template, dict[str, Any]]] = []
    implementation = spec.get("implementation")
    if isinstance(implementation, Mapping) and implementation.get("template") in TEMPLATES:
        template = TEMPLATES[str(implementation["template"])]
        found.append((template, template.params(dict(implementation.get("params") or {}))))
    name_words = " ".join(re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", str(spec.get("name", ""))))
    for step in detect_steps(f"{spec.get('purpose', '')}. {name_words}"):
        template = TEMPLATES[step.template]
        found.append((template, template.params(step.params)))
    for step in detect_steps(f"{spec.get('purpose', '')}. {name_words}"):
        template = TEMPLATES[step.template]
        for inferred in _inferred(template, spec):
            found.append((template, {**inferred, **{k: v for k, v in step.params.items() if k != "key"}}))
    for template in TEMPLATES.values():
        found.extend((template, params) for params in _inferred(template, spec))
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
