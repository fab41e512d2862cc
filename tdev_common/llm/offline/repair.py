"""Offline code repair: program transforms for common faults, chosen from the failure, deterministic."""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from tdev_common.errors import FailedPrecondition
from tdev_common.llm.offline.codegen import generate
from tdev_common.llm.offline.codeinfo import collect, find_agent_class
from tdev_common.llm.offline.edits import Edit, Source, apply, import_insertion_point

KNOWN_IMPORTS = {
    "re": "import re", "math": "import math", "json": "import json", "statistics": "import statistics",
    "itertools": "import itertools", "functools": "import functools", "string": "import string",
    "datetime": "import datetime", "collections": "import collections", "random": "import random",
    "csv": "import csv", "io": "import io", "unicodedata": "import unicodedata", "operator": "import operator",
    "decimal": "import decimal", "fractions": "import fractions", "heapq": "import heapq", "bisect": "import bisect",
    "textwrap": "import textwrap", "copy": "import copy", "hashlib": "import hashlib", "base64": "import base64",
    "Counter": "from collections import Counter", "defaultdict": "from collections import defaultdict",
    "OrderedDict": "from collections import OrderedDict", "deque": "from collections import deque",
    "Any": "from typing import Any", "Decimal": "from decimal import Decimal",
    "Fraction": "from fractions import Fraction", "reduce": "from functools import reduce",
    "stats": "import statistics as stats",
}
_DEFAULTS = {"string": "''", "array": "[]", "object": "{}", "integer": "0", "number": "0.0", "boolean": "False"}
Result = tuple[str, dict[str, Any]]


def _fix(kind: str, description: str, line: int | None = None) -> dict[str, Any]:
    return {"kind": kind, "description": description, "line": line}


def failure_line(failure: Mapping[str, Any]) -> int | None:
    """The agent-code line a failure points at: an explicit ``line``, else the last traceback frame."""
    if isinstance(failure.get("line"), int):
        return int(failure["line"])
    lines = re.findall(r'File "([^"]*)", line (\d+)', str(failure.get("traceback", "")))
    agent_frames = [int(n) for name, n in lines if "agent" in name or name.startswith("<")]
    if agent_frames:
        return agent_frames[-1]
    return int(lines[-1][1]) if lines else None


def _spec_type(spec: Mapping[str, Any] | None, key: str, which: str = "input_schema") -> str | None:
    schema = (spec or {}).get(which)
    if isinstance(schema, Mapping):
        prop = (schema.get("properties") or {}).get(key)
        if isinstance(prop, Mapping) and isinstance(prop.get("type"), str):
            return str(prop["type"])
    return None


def _spec_keys(spec: Mapping[str, Any] | None, which: str) -> list[str]:
    schema = (spec or {}).get(which)
    if not isinstance(schema, Mapping):
        return []
    keys = list((schema.get("properties") or {}).keys()) or list(schema.get("required") or [])
    return [str(k) for k in keys]


def _inputs_reads(tree: ast.Module) -> tuple[str | None, list[ast.AST]]:
    agent = find_agent_class(tree)
    if agent is None:
        return None, []
    execute = next(n for n in agent.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                   and n.name == "execute")
    params = [*execute.args.posonlyargs, *execute.args.args]
    if len(params) < 2:
        return None, []
    name = params[1].arg
    return name, list(ast.walk(execute))


def _is_inputs_key(node: ast.AST, inputs: str, key: str | None = None) -> bool:
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == inputs
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
            and (key is None or node.slice.value == key) and isinstance(node.ctx, ast.Load))


def fix_key_error(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """KeyError on inputs["k"]: read the spec's name for it if the code misnamed it, else .get with a default."""
    if failure.get("exception_type") != "KeyError":
        return None
    key = str(failure.get("message", "")).strip().strip("'\"")
    tree = ast.parse(code)
    inputs, nodes = _inputs_reads(tree)
    if inputs is None:
        return None
    hits = [n for n in nodes if _is_inputs_key(n, inputs, key)]
    if not hits:
        return None
    source = Source(code)
    spec_keys = _spec_keys(spec, "input_schema")
    read_keys = {n.slice.value for n in nodes if _is_inputs_key(n, inputs)}  # type: ignore[attr-defined]
    unread = [k for k in spec_keys if k not in read_keys]
    if spec_keys and key not in spec_keys and len(unread) == 1:
        new_key = unread[0]
        edits = [Edit(*source.span(n.slice), repr(new_key)) for n in hits]  # type: ignore[attr-defined]
        return apply(code, edits), _fix("input_key_rename", f"read input {new_key!r} (the spec's name) instead of "
                                        f"{key!r}", hits[0].lineno)  # type: ignore[attr-defined]
    read = collect(code).inputs.get(key)
    kind = _spec_type(spec, key) or (read.type if read is not None else None)
    default = _DEFAULTS.get(str(kind), "None")
    edits = [Edit(*source.span(n), f"{inputs}.get({key!r}, {default})") for n in hits]
    return apply(code, edits), _fix("missing_input_default", f"input {key!r} may be absent: read it with "
                                    f".get({key!r}, {default})", hits[0].lineno)  # type: ignore[attr-defined]


def fix_none_input(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """TypeError/AttributeError on None: give ``inputs.get("k")`` calls without a default a typed default."""
    message = str(failure.get("message", ""))
    if failure.get("exception_type") not in ("TypeError", "AttributeError") or "NoneType" not in message:
        return None
    tree = ast.parse(code)
    inputs, nodes = _inputs_reads(tree)
    if inputs is None:
        return None
    facts = collect(code)
    source = Source(code)
    edits = []
    for node in nodes:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == inputs and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            key = node.args[0].value
            kind = _spec_type(spec, key) or (facts.inputs[key].type if key in facts.inputs else None)
            if kind in _DEFAULTS:
                edits.append(Edit(*source.span(node), f"{inputs}.get({key!r}, {_DEFAULTS[kind]})"))
    if not edits:
        return None
    return apply(code, edits), _fix("missing_input_default", "inputs read without a default now default to an "
                                    "empty value of their type", failure_line(failure))


def fix_name_error(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """NameError for a standard-library name: add the import."""
    if failure.get("exception_type") != "NameError":
        return None
    match = re.search(r"name '([A-Za-z_][A-Za-z0-9_]*)' is not defined", str(failure.get("message", "")))
    if not match or match.group(1) not in KNOWN_IMPORTS:
        return None
    statement = KNOWN_IMPORTS[match.group(1)]
    tree = ast.parse(code)
    source = Source(code)
    position = import_insertion_point(tree, source)
    return apply(code, [Edit(position, position, statement + "\n")]), _fix(
        "add_import", f"added `{statement}`", None)


def fix_zero_division(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """ZeroDivisionError: guard the divisions on the failing line (0.0 when the divisor is zero)."""
    if failure.get("exception_type") != "ZeroDivisionError":
        return None
    line = failure_line(failure)
    tree = ast.parse(code)
    source = Source(code)
    edits = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod)
                and (line is None or node.lineno == line)):
            left, right = source.segment(node.left), source.segment(node.right)
            operator_text = {ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}[type(node.op)]
            edits.append(Edit(*source.span(node), f"(({left}) {operator_text} ({right}) if ({right}) else 0.0)"))
    if not edits:
        return None
    return apply(code, edits), _fix("guard_division", "division by zero now yields 0.0", line)


def _return_dicts(tree: ast.Module) -> list[ast.Dict]:
    agent = find_agent_class(tree)
    if agent is None:
        return []
    execute = next(n for n in agent.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                   and n.name == "execute")
    assigned: dict[str, ast.Dict] = {}
    for node in ast.walk(execute):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Dict):
            assigned[node.targets[0].id] = node.value
    found = []
    for node in ast.walk(execute):
        if isinstance(node, ast.Return):
            if isinstance(node.value, ast.Dict):
                found.append(node.value)
            elif isinstance(node.value, ast.Name) and node.value.id in assigned:
                found.append(assigned[node.value.id])
    return found


def _key_pairs(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, str]:
    """Pairs wrongly named output keys with the expected names: by equal value, then by similar name."""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    pairs: dict[str, str] = {}
    for want in list(missing):
        same = [k for k in extra if actual[k] == expected[want] and k not in pairs]
        if len(same) == 1:
            pairs[same[0]] = want
            missing.remove(want)
    extra = [k for k in extra if k not in pairs]
    for want in list(missing):
        close = difflib.get_close_matches(want, extra, n=1, cutoff=0.5)
        if close:
            pairs[close[0]] = want
            extra.remove(close[0])
            missing.remove(want)
    if len(missing) == 1 and len(extra) == 1:
        pairs[extra[0]] = missing[0]
    return pairs


def fix_output_keys(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """Wrong output key names: rename them in the returned dict literals (and ``result["k"] = ...``)."""
    actual, expected = failure.get("actual_output"), failure.get("expected_output")
    if failure.get("kind") != "wrong_output" or not isinstance(actual, Mapping) or not isinstance(expected, Mapping):
        return None
    pairs = _key_pairs(actual, expected)
    if not pairs:
        return None
    tree = ast.parse(code)
    source = Source(code)
    edits = []
    for literal in _return_dicts(tree):
        for key in literal.keys:
            if isinstance(key, ast.Constant) and key.value in pairs:
                edits.append(Edit(*source.span(key), repr(pairs[str(key.value)])))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and isinstance(node.slice, ast.Constant)
                and node.slice.value in pairs):
            edits.append(Edit(*source.span(node.slice), repr(pairs[str(node.slice.value)])))
    if not edits:
        return None
    renamed = ", ".join(f"{a!r} -> {b!r}" for a, b in sorted(pairs.items()))
    return apply(code, edits), _fix("output_key_rename", f"renamed output keys: {renamed}", None)


def fix_non_dict_output(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """execute returned a bare value: wrap it as the single expected output key."""
    if failure.get("kind") not in ("invalid_output", "wrong_output"):
        return None
    facts = collect(code)
    if not facts.non_dict_returns:
        return None
    expected = failure.get("expected_output")
    keys = list(expected) if isinstance(expected, Mapping) else _spec_keys(spec, "output_schema")
    if len(keys) != 1:
        return None
    tree = ast.parse(code)
    source = Source(code)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.lineno in facts.non_dict_returns and node.value is not None:
            edits.append(Edit(*source.span(node.value), f"{{{keys[0]!r}: {source.segment(node.value)}}}"))
    if not edits:
        return None
    return apply(code, edits), _fix("wrap_output", f"execute now returns {{{keys[0]!r}: ...}}",
                                    facts.non_dict_returns[0])


def fix_contract(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """__init__ with required arguments, or no get_capabilities: make them fit the agent contract."""
    facts = collect(code)
    if facts.agent is None:
        return None
    source = Source(code)
    edits: list[Edit] = []
    fixes: list[str] = []
    init = facts.methods.get("__init__")
    if init is not None:
        positional = [*init.args.posonlyargs, *init.args.args][1:]
        missing_defaults = len(positional) - len(init.args.defaults)
        for arg in positional[:missing_defaults]:
            end = source.offset(arg.end_lineno, arg.end_col_offset)  # type: ignore[arg-type]
            edits.append(Edit(end, end, "=None"))
        for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True):
            if default is None:
                end = source.offset(arg.end_lineno, arg.end_col_offset)  # type: ignore[arg-type]
                edits.append(Edit(end, end, "=None"))
        if edits:
            fixes.append("__init__ arguments now default to None")
    if "get_capabilities" not in facts.methods:
        description = str((spec or {}).get("purpose") or _first_doc(facts.agent) or facts.agent.name)
        capabilities = {"name": facts.agent.name, "description": description,
                        "input_schema": dict((spec or {}).get("input_schema") or {"type": "object"}),
                        "output_schema": dict((spec or {}).get("output_schema") or {"type": "object"})}
        end_line = facts.agent.end_lineno or facts.agent.lineno
        insert_at = source.line_start(end_line + 1) if end_line < len(source.lines) else len(code)
        prefix = "" if code[:insert_at].endswith("\n") else "\n"
        method = (f"{prefix}\n    def get_capabilities(self) -> dict:\n        \"\"\"Name, purpose and schemas.\"\"\"\n"
                  f"        return {capabilities!r}\n")
        edits.append(Edit(insert_at, insert_at, method))
        fixes.append("added get_capabilities")
    if not edits:
        return None
    return apply(code, edits), _fix("contract", "; ".join(fixes), facts.agent.lineno)


def _first_doc(node: ast.ClassDef) -> str | None:
    doc = ast.get_docstring(node)
    return doc.splitlines()[0] if doc else None


def reinstantiate(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Result | None:
    """Regenerate from the template library when the spec matches a template (keys and examples)."""
    if not spec:
        return None
    try:
        generated = generate(spec)
    except FailedPrecondition:
        return None
    if generated["code"] == code:
        return None
    return generated["code"], _fix("template_reinstantiation", f"regenerated from offline template "
                                   f"{generated['template']!r}, which reproduces the spec's examples", None)


_TRANSFORMS: list[Callable[[str, Mapping[str, Any], Mapping[str, Any] | None], Result | None]] = [
    fix_key_error, fix_none_input, fix_name_error, fix_zero_division, fix_output_keys, fix_non_dict_output,
    fix_contract,
]


def _diagnosis(failure: Mapping[str, Any]) -> str:
    kind = failure.get("kind", "exception")
    if kind == "exception":
        return f"{failure.get('exception_type', 'Exception')}: {failure.get('message', '')}".strip()
    if kind == "wrong_output":
        return "output differs from the expected output"
    if kind == "timeout":
        return "the code did not finish in time (look for unbounded loops)"
    return str(kind)


def repair(code: str, failure: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """REPAIR_SCHEMA answer: the first transform that applies (template re-instantiation last)."""
    diagnosis = _diagnosis(failure)
    try:
        ast.parse(code)
    except SyntaxError as error:
        result = reinstantiate(code, failure, spec)
        if result is None:
            return {"code": code, "changed": False, "fixes": [],
                    "diagnosis": f"syntax error at line {error.lineno}: {error.msg}; no spec matches a template"}
        return {"code": result[0], "changed": True, "fixes": [result[1]],
                "diagnosis": f"syntax error at line {error.lineno}: {error.msg}"}
    for transform in _TRANSFORMS:
        result = transform(code, failure, spec)
        if result is not None and result[0] != code:
            ast.parse(result[0])  # a transform producing broken code is a bug, never an answer
            return {"code": result[0], "changed": True, "diagnosis": diagnosis, "fixes": [result[1]]}
    result = reinstantiate(code, failure, spec)
    if result is not None:
        return {"code": result[0], "changed": True, "diagnosis": diagnosis, "fixes": [result[1]]}
    return {"code": code, "changed": False, "fixes": [],
            "diagnosis": diagnosis + "; no offline transform applies (offline repair is rule-based, not a model)"}
