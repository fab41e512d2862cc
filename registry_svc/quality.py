"""Static code metrics (complexity, documentation, typing, size, lint findings) and the quality score."""

from __future__ import annotations

import ast
import builtins
from typing import Any

STATIC_WEIGHTS = {"complexity": 0.25, "documentation": 0.2, "typing": 0.2, "size": 0.1, "lint": 0.25}
# The model's assessment is one voice of several: static facts are cheap, deterministic and hard to fool.
MODEL_WEIGHT = 0.4
MAX_LINE_CHARS = 120
_BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler, ast.Assert,
             ast.comprehension, ast.match_case)


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def cyclomatic_complexity(function: ast.AST) -> int:
    """McCabe complexity: 1 + decision points (branches, handlers, boolean operators, comprehension ifs)."""
    score = 1
    for node in ast.walk(function):
        if isinstance(node, _BRANCHES):
            score += 1
            if isinstance(node, ast.comprehension):
                score += len(node.ifs)
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
    return score


def _documented(tree: ast.Module) -> tuple[int, int]:
    targets: list[ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef] = [tree]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            targets.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not (
            node.name.startswith("__") and node.name.endswith("__")
        ) and not node.name.startswith("_"):
            targets.append(node)
    documented = sum(1 for t in targets if ast.get_docstring(t) is not None)
    return documented, len(targets)


def _typed(tree: ast.Module) -> tuple[int, int]:
    typed = total = 0
    for function in _functions(tree):
        args = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
        for index, arg in enumerate(args):
            if index == 0 and arg.arg in ("self", "cls"):
                continue
            total += 1
            typed += arg.annotation is not None
        if function.name != "__init__":
            total += 1
            typed += function.returns is not None
    return typed, total


def lint_findings(tree: ast.Module, code: str) -> list[str]:
    """Problems a linter would flag, each as ``line N: what``."""
    findings: list[str] = []
    imported: dict[str, int] = {}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    builtin_names = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            findings.append(f"line {node.lineno}: bare except")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            findings.append(f"line {node.lineno}: wildcard import")
        elif isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "module", None) != "__future__":
            for alias in node.names:
                if alias.name != "*":
                    imported[(alias.asname or alias.name).split(".")[0]] = node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            findings.append(f"line {node.lineno}: use of {node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            findings.append(f"line {node.lineno}: print() in agent code (return results instead)")
        elif isinstance(node, ast.Global):
            findings.append(f"line {node.lineno}: global statement")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                if isinstance(default, ast.List | ast.Dict | ast.Set):
                    findings.append(f"line {node.lineno}: mutable default argument in {node.name}")
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if arg.arg in builtin_names:
                    findings.append(f"line {node.lineno}: argument {arg.arg!r} shadows a builtin")
    for name, line in sorted(imported.items(), key=lambda item: item[1]):
        if name not in used:
            findings.append(f"line {line}: unused import {name}")
    for number, text in enumerate(code.splitlines(), start=1):
        if len(text) > MAX_LINE_CHARS:
            findings.append(f"line {number}: line longer than {MAX_LINE_CHARS} characters")
    return sorted(findings, key=lambda finding: int(finding.split(":", 1)[0].removeprefix("line ")))


def _ramp(value: float, good: float, bad: float, floor: float = 0.0) -> float:
    """1 at or below ``good``, falling linearly to ``floor`` at ``bad`` and beyond."""
    if value <= good:
        return 1.0
    if value >= bad:
        return floor
    return 1.0 - (1.0 - floor) * (value - good) / (bad - good)


def static_metrics(code: str) -> dict[str, Any]:
    """Metrics of valid source and their sub-scores in [0, 1], plus ``static_score`` (weighted)."""
    tree = ast.parse(code)
    functions = _functions(tree)
    complexities = [cyclomatic_complexity(f) for f in functions] or [1]
    average_complexity = sum(complexities) / len(complexities)
    documented, documentable = _documented(tree)
    typed, typeable = _typed(tree)
    lines = [line for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]
    findings = lint_findings(tree, code)
    scores = {
        "complexity": min(_ramp(average_complexity, 5, 15), _ramp(max(complexities), 12, 30, floor=0.3)),
        "documentation": documented / documentable if documentable else 0.0,
        "typing": typed / typeable if typeable else 1.0,
        "size": _ramp(len(lines), 150, 1000, floor=0.2),
        "lint": max(0.0, 1.0 - 0.15 * len(findings)),
    }
    static_score = sum(STATIC_WEIGHTS[key] * value for key, value in scores.items())
    return {
        "average_complexity": round(average_complexity, 3),
        "max_complexity": max(complexities),
        "functions": len(functions),
        "documented": documented,
        "documentable": documentable,
        "typed_annotations": typed,
        "annotatable": typeable,
        "code_lines": len(lines),
        "lint_findings": findings[:50],
        "lint_count": len(findings),
        "scores": {key: round(value, 4) for key, value in scores.items()},
        "static_score": round(static_score, 4),
    }


def quality_score(static_score: float, model_quality: float | None) -> float:
    """Blends the static score with the model's assessment (static alone when there is none), in [0, 1]."""
    static_score = min(1.0, max(0.0, static_score))
    if model_quality is None:
        return round(static_score, 4)
    model_quality = min(1.0, max(0.0, model_quality))
    return round((1 - MODEL_WEIGHT) * static_score + MODEL_WEIGHT * model_quality, 4)
