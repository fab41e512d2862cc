"""Deterministic code findings (contract, safety, robustness, style) and the quality score built on them."""

from __future__ import annotations

import ast
from typing import Any

from tdev_common.llm.offline.codeinfo import CodeFacts

MAX_COMPLEXITY = 10
MAX_LINE_CHARS = 120
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
_FORBIDDEN_MODULES = {"subprocess", "socket", "requests", "urllib", "http", "ftplib", "smtplib", "ctypes",
                      "multiprocessing", "threading", "asyncio.subprocess", "shutil", "httpx", "aiohttp"}
_PENALTY = {"error": 0.25, "warning": 0.08, "info": 0.02}


def _finding(severity: str, category: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"severity": severity, "category": category, "message": message, "line": line}


def contract_findings(facts: CodeFacts) -> list[dict[str, Any]]:
    """The agent contract of DESIGN §3: one class with execute, get_capabilities, a no-argument __init__."""
    found: list[dict[str, Any]] = []
    if facts.agent is None:
        return [_finding("error", "contract", "no class defines execute(self, inputs)")]
    classes = [n for n in facts.tree.body if isinstance(n, ast.ClassDef)]
    if len(classes) > 1:
        found.append(_finding("warning", "contract", f"{len(classes)} classes defined; an agent defines one",
                              classes[1].lineno))
    if facts.inputs_name is None and facts.execute is not None:
        found.append(_finding("error", "contract", "execute must take one argument: inputs", facts.execute.lineno))
    if "get_capabilities" not in facts.methods:
        found.append(_finding("error", "contract", "get_capabilities(self) is missing", facts.agent.lineno))
    init = facts.methods.get("__init__")
    if init is not None:
        positional = [*init.args.posonlyargs, *init.args.args][1:]
        required = len(positional) - len(init.args.defaults)
        required_kw = sum(1 for default in init.args.kw_defaults if default is None)
        if required > 0 or required_kw > 0:
            found.append(_finding("error", "contract", "__init__ must take no required arguments", init.lineno))
    for line in facts.non_dict_returns:
        found.append(_finding("error", "contract", "execute returns something other than a dict", line))
    return found


def safety_findings(facts: CodeFacts) -> list[dict[str, Any]]:
    """Dynamic code, processes, network and files: agents run sandboxed and must not need them."""
    found: list[dict[str, Any]] = []
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in _FORBIDDEN_CALLS:
                found.append(_finding("error", "security", f"{node.func.id}() runs dynamic code", node.lineno))
            elif node.func.id == "open":
                found.append(_finding("warning", "security", "open() reads or writes files; agents get none",
                                      node.lineno))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
            node.func.value, ast.Name
        ) and node.func.value.id == "os" and node.func.attr in ("system", "popen", "fork", "kill", "remove"):
            found.append(_finding("error", "security", f"os.{node.func.attr}() is not allowed in agents",
                                  node.lineno))
    for item in facts.imports:
        if item["module"] in _FORBIDDEN_MODULES or item["name"] in _FORBIDDEN_MODULES:
            found.append(_finding("error", "security", f"imports {item['name']} (processes/network are "
                                  "unavailable in the sandbox)", item["line"]))
        elif not item["stdlib"]:
            found.append(_finding("warning", "dependency", f"imports third-party module {item['module']}; "
                                  "the sandbox has only the standard library", item["line"]))
    return found


def robustness_findings(facts: CodeFacts) -> list[dict[str, Any]]:
    """Error handling and state."""
    found: list[dict[str, Any]] = []
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.ExceptHandler):
            if node.type is None:
                found.append(_finding("warning", "robustness", "bare except hides every error", node.lineno))
            elif len(node.body) == 1 and isinstance(node.body[0], ast.Pass):
                found.append(_finding("warning", "robustness", "exception swallowed with pass", node.lineno))
        elif isinstance(node, ast.Global):
            found.append(_finding("warning", "robustness", "global state makes executions depend on each other",
                                  node.lineno))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if isinstance(default, ast.List | ast.Dict | ast.Set):
                    found.append(_finding("warning", "robustness", f"mutable default argument in {node.name}",
                                          node.lineno))
    if facts.dynamic_inputs:
        found.append(_finding("info", "contract", "inputs are read with computed keys; the input schema is a guess"))
    return found


def style_findings(facts: CodeFacts) -> list[dict[str, Any]]:
    """Documentation, typing, complexity, prints and long lines."""
    found: list[dict[str, Any]] = []
    if ast.get_docstring(facts.tree) is None:
        found.append(_finding("info", "documentation", "module has no docstring", 1))
    if facts.agent is not None and ast.get_docstring(facts.agent) is None:
        found.append(_finding("info", "documentation", f"class {facts.agent.name} has no docstring",
                              facts.agent.lineno))
    for function in facts.functions:
        if not function.docstring and not function.name.startswith("_"):
            found.append(_finding("info", "documentation", f"{function.name}() has no docstring", function.line))
        if function.complexity > MAX_COMPLEXITY:
            found.append(_finding("warning", "complexity", f"{function.name}() has cyclomatic complexity "
                                  f"{function.complexity} (> {MAX_COMPLEXITY})", function.line))
        if function.returns is None and function.name != "__init__":
            found.append(_finding("info", "typing", f"{function.name}() has no return annotation", function.line))
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(_finding("info", "style", "print() output is discarded; return data instead",
                                  node.lineno))
        elif isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            found.append(_finding("warning", "style", "wildcard import", node.lineno))
    long_lines = [i for i, line in enumerate(facts.source.splitlines(), 1) if len(line) > MAX_LINE_CHARS]
    if long_lines:
        found.append(_finding("info", "style", f"{len(long_lines)} lines longer than {MAX_LINE_CHARS} characters",
                              long_lines[0]))
    return found


def all_findings(facts: CodeFacts) -> list[dict[str, Any]]:
    """Every finding, most severe first, then by line."""
    found = [*contract_findings(facts), *safety_findings(facts), *robustness_findings(facts),
             *style_findings(facts)]
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda f: (order[f["severity"]], f["line"] or 0, f["message"]))


def documentation_ratio(facts: CodeFacts) -> float:
    """Share of module, class and public functions with docstrings."""
    targets = 1 + (1 if facts.agent is not None else 0)
    documented = (1 if ast.get_docstring(facts.tree) else 0) + (
        1 if facts.agent is not None and ast.get_docstring(facts.agent) else 0)
    for function in facts.functions:
        if function.name.startswith("_") and function.name != "__init__":
            continue
        if function.name == "__init__":
            continue
        targets += 1
        documented += 1 if function.docstring else 0
    return documented / targets


def type_hint_ratio(facts: CodeFacts) -> float:
    """Share of arguments and returns with annotations (1.0 when there is nothing to annotate)."""
    total = annotated = 0
    for function in facts.functions:
        for arg in function.args:
            total += 1
            annotated += 1 if arg["annotation"] else 0
        if function.name != "__init__":
            total += 1
            annotated += 1 if function.returns else 0
    return annotated / total if total else 1.0


def quality(facts: CodeFacts, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Score in [0, 1]: half from findings (errors weigh most), a quarter each documentation and typing."""
    penalty = sum(_PENALTY[f["severity"]] for f in findings)
    documentation = documentation_ratio(facts)
    hints = type_hint_ratio(facts)
    score = 0.5 * max(0.0, 1.0 - penalty) + 0.25 * documentation + 0.25 * hints
    return {
        "score": round(min(1.0, max(0.0, score)), 3),
        "documentation": round(documentation, 3),
        "type_hints": round(hints, 3),
        "max_complexity": max((f.complexity for f in facts.functions), default=1),
        "issues": findings,
    }
