"""Static facts about agent code from ``ast``: the agent class, functions, imports, inputs and outputs."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from typing import Any

_BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler, ast.Assert,
             ast.comprehension, ast.match_case)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_STR_METHODS = {"split", "lower", "upper", "strip", "lstrip", "rstrip", "replace", "startswith", "endswith",
                "title", "casefold", "splitlines", "encode", "isdigit", "isalpha", "find", "count", "format"}
_LIST_METHODS = {"append", "extend", "pop", "insert", "sort", "index"}
_DICT_METHODS = {"items", "keys", "values", "get", "setdefault", "update"}
_ITERATING_CALLS = {"sum", "sorted", "min", "max", "any", "all", "set", "list", "tuple", "enumerate", "zip",
                    "Counter", "join", "split", "findall", "fmean", "mean", "median", "pstdev", "stdev"}
_TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
               "tuple": "array", "dict": "object"}


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return None


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


def loop_depth(node: ast.AST, depth: int = 0) -> int:
    """Deepest nesting of loops and comprehension generators."""
    deepest = depth
    for child in ast.iter_child_nodes(node):
        step = 0
        if isinstance(child, _LOOPS):
            step = 1
        elif isinstance(child, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            step = len(child.generators)
        deepest = max(deepest, loop_depth(child, depth + step))
    return deepest


@dataclass
class FunctionFacts:
    """One function or method."""

    name: str
    line: int
    args: list[dict[str, str | None]]
    returns: str | None
    docstring: bool
    complexity: int
    lines: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "line": self.line, "args": self.args, "returns": self.returns,
                "docstring": self.docstring, "complexity": self.complexity, "lines": self.lines}


@dataclass
class InputRead:
    """One key the agent reads from its inputs."""

    key: str
    required: bool
    line: int
    type: str | None = None
    default: Any = None
    has_default: bool = False


@dataclass
class CodeFacts:
    """Everything the offline analysis, review and repair need to know about a module."""

    tree: ast.Module
    source: str
    agent: ast.ClassDef | None
    execute: ast.FunctionDef | ast.AsyncFunctionDef | None
    inputs_name: str | None
    functions: list[FunctionFacts]
    imports: list[dict[str, Any]]
    inputs: dict[str, InputRead]
    outputs: dict[str, dict[str, Any]]
    required_outputs: set[str]
    dynamic_inputs: bool
    dynamic_outputs: bool
    non_dict_returns: list[int]
    declared: dict[str, Any] | None
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)

    @property
    def lines_of_code(self) -> int:
        """Non-blank, non-comment lines."""
        return sum(1 for line in self.source.splitlines() if line.strip() and not line.strip().startswith("#"))

    @property
    def dependencies(self) -> list[str]:
        """Top-level modules imported, sorted."""
        return sorted({item["module"] for item in self.imports})


def find_agent_class(tree: ast.Module) -> ast.ClassDef | None:
    """The first top-level class defining ``execute``."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == "execute" for item in node.body
        ):
            return node
    return None


def _methods(agent: ast.ClassDef | None) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    if agent is None:
        return {}
    return {item.name: item for item in agent.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}


def _imports(tree: ast.Module) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                found.append({"module": top, "name": alias.name, "line": node.lineno,
                              "stdlib": top in sys.stdlib_module_names})
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "__future__":
            top = node.module.split(".")[0]
            found.append({"module": top, "name": node.module, "line": node.lineno,
                          "stdlib": top in sys.stdlib_module_names})
    return found


def _functions(tree: ast.Module) -> list[FunctionFacts]:
    facts = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        facts.append(FunctionFacts(
            name=node.name,
            line=node.lineno,
            args=[{"name": a.arg, "annotation": ast.unparse(a.annotation) if a.annotation else None}
                  for a in args if a.arg not in ("self", "cls")],
            returns=ast.unparse(node.returns) if node.returns else None,
            docstring=ast.get_docstring(node) is not None,
            complexity=cyclomatic_complexity(node),
            lines=(node.end_lineno or node.lineno) - node.lineno + 1,
        ))
    return sorted(facts, key=lambda f: f.line)


class _InputsVisitor(ast.NodeVisitor):
    """Finds ``inputs["k"]``, ``inputs.get("k", d)`` and ``"k" in inputs`` in execute (aliases followed)."""

    def __init__(self, name: str) -> None:
        self.aliases = {name}
        self.reads: dict[str, InputRead] = {}
        self.checked: set[str] = set()
        self.dynamic = False
        self.bound: dict[str, str] = {}  # variable -> input key it was read from

    def _is_inputs(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id in self.aliases

    def _key_of(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Subscript) and self._is_inputs(node.value):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                return node.slice.value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and self._is_inputs(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            return node.args[0].value
        return None

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if self._is_inputs(node.value):
                self.aliases.add(target)
            key = self._key_of(node.value)
            if key is not None:
                self.bound[target] = key
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._is_inputs(node.value) and isinstance(node.ctx, ast.Load):
            key = self._key_of(node)
            if key is None:
                self.dynamic = True
            elif key not in self.reads:
                self.reads[key] = InputRead(key=key, required=True, line=node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and self._is_inputs(func.value):
            key = self._key_of(node)
            if func.attr == "get" and key is not None:
                read = self.reads.get(key)
                default: Any = None
                has_default = len(node.args) > 1
                if has_default:
                    try:
                        default = ast.literal_eval(node.args[1])
                    except (ValueError, TypeError, SyntaxError):
                        default = None
                if read is None or read.required:
                    self.reads[key] = InputRead(key=key, required=False, line=node.lineno, default=default,
                                                has_default=has_default,
                                                type=_json_type(default) if has_default else None)
            elif func.attr in ("get", "items", "keys", "values", "__getitem__"):
                self.dynamic = True
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if (len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn)
                and self._is_inputs(node.comparators[0]) and isinstance(node.left, ast.Constant)
                and isinstance(node.left.value, str)):
            self.checked.add(node.left.value)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        if self._is_inputs(node.iter):
            self.dynamic = True
        self.generic_visit(node)


def _usage_types(function: ast.AST, bound: dict[str, str]) -> dict[str, str]:
    """Infers JSON types of input-bound variables from how they are used."""
    types: dict[str, str] = {}

    def note(name: str, json_type: str) -> None:
        if name in bound and bound[name] not in types:
            types[bound[name]] = json_type

    for node in ast.walk(function):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
                and len(node.args) == 2 and isinstance(node.args[0], ast.Name)):
            spec = node.args[1]
            names = [e for e in spec.elts] if isinstance(spec, ast.Tuple) else [spec]
            first = names[0] if names else None
            if isinstance(spec, ast.BinOp):  # isinstance(x, int | float)
                note(node.args[0].id, "number")
            elif isinstance(first, ast.Name) and first.id in _TYPE_NAMES:
                kind = _TYPE_NAMES[first.id]
                note(node.args[0].id, "number" if len(names) > 1 and kind in ("integer", "number") else kind)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
            node.func.value, ast.Name
        ):
            if node.func.attr in _STR_METHODS:
                note(node.func.value.id, "string")
            elif node.func.attr in _LIST_METHODS:
                note(node.func.value.id, "array")
            elif node.func.attr in _DICT_METHODS:
                note(node.func.value.id, "object")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args and isinstance(
            node.args[0], ast.Name
        ):
            if node.func.id in ("sum", "sorted", "min", "max", "fmean", "median"):
                note(node.args[0].id, "array")
            elif node.func.id in ("float", "int", "abs", "round"):
                note(node.args[0].id, "number")
        elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.iter, ast.Name):
            note(node.iter.id, "array")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub | ast.Mult | ast.Div | ast.Pow):
            for side in (node.left, node.right):
                if isinstance(side, ast.Name):
                    note(side.id, "number")
    return types


def expression_schema(node: ast.AST | None, assigned: dict[str, ast.AST] | None = None,
                      input_types: dict[str, str] | None = None, depth: int = 0) -> dict[str, Any]:
    """Best-effort JSON Schema of the value an expression produces ({} when unknown)."""
    assigned = assigned or {}
    if node is None or depth > 4:
        return {}
    if isinstance(node, ast.Constant):
        kind = _json_type(node.value)
        return {"type": kind} if kind else {}
    if isinstance(node, ast.JoinedStr):
        return {"type": "string"}
    if isinstance(node, ast.List | ast.ListComp | ast.Tuple):
        return {"type": "array"}
    if isinstance(node, ast.Dict | ast.DictComp):
        return {"type": "object"}
    if isinstance(node, ast.Compare) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return {"type": "boolean"}
    if isinstance(node, ast.BoolOp):
        kinds = [expression_schema(v, assigned, input_types, depth + 1).get("type") for v in node.values]
        return {"type": "boolean"} if kinds and all(k == "boolean" for k in kinds) else {}
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Div):
            return {"type": "number"}
        left = expression_schema(node.left, assigned, input_types, depth + 1).get("type")
        right = expression_schema(node.right, assigned, input_types, depth + 1).get("type")
        if isinstance(node.op, ast.Add) and "string" in (left, right):
            return {"type": "string"}
        if left in ("integer", "number") and right in ("integer", "number"):
            return {"type": "integer" if left == right == "integer" and not isinstance(node.op, ast.Pow)
                    else "number"}
        return {}
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        return expression_schema(node.value, assigned, input_types, depth + 1)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("max", "min") and node.args:
            if len(node.args) == 1:
                inner = expression_schema(node.args[0], assigned, input_types, depth + 1)
                return dict(inner.get("items", {})) if inner.get("type") == "array" else {}
            kinds = [str(expression_schema(a, assigned, input_types, depth + 1).get("type")) for a in node.args]
            if all(kind in ("integer", "number") for kind in kinds):
                return {"type": "integer" if all(kind == "integer" for kind in kinds) else "number"}
            return {}
        if isinstance(func, ast.Name):
            simple = {"len": "integer", "int": "integer", "float": "number", "str": "string", "bool": "boolean",
                      "sum": "number", "abs": "number", "sorted": "array", "list": "array", "dict": "object",
                      "fsum": "number", "any": "boolean", "all": "boolean", "isinstance": "boolean"}
            if func.id == "round":
                return {"type": "number" if len(node.args) > 1 else "integer"}
            if func.id in simple:
                return {"type": simple[func.id]}
        if isinstance(func, ast.Attribute):
            if func.attr in ("join", "upper", "lower", "strip", "replace", "title", "format", "casefold"):
                return {"type": "string"}
            if func.attr in ("split", "findall", "splitlines"):
                return {"type": "array", "items": {"type": "string"}}
            if func.attr in ("fmean", "mean", "median", "pstdev", "stdev", "fsum", "sqrt"):
                return {"type": "number"}
        return {}
    if isinstance(node, ast.Name):
        if input_types and node.id in input_types:
            return {"type": input_types[node.id]}
        if node.id in assigned:
            return expression_schema(assigned[node.id], assigned, input_types, depth + 1)
    return {}


def _outputs(execute: ast.AST, input_types: dict[str, str]
             ) -> tuple[dict[str, dict[str, Any]], set[str], bool, list[int]]:
    """Keys of returned dict literals (or of a returned variable built as a dict), with value schemas."""
    assigned: dict[str, ast.AST] = {}
    item_sets: dict[str, dict[str, ast.AST | None]] = {}
    dynamic_items: set[str] = set()
    for node in ast.walk(execute):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and node.value is not None:
                    assigned[target.id] = node.value
                elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                    name = target.value.id
                    if isinstance(target.slice, ast.Constant) and isinstance(target.slice.value, str):
                        item_sets.setdefault(name, {})[target.slice.value] = node.value
                    else:
                        dynamic_items.add(name)
    outputs: dict[str, dict[str, Any]] = {}
    dynamic = False
    non_dict: list[int] = []
    key_sets: list[set[str]] = []

    def take_dict(literal: ast.Dict, extra: set[str] | None = None) -> None:
        nonlocal dynamic
        keys = set(extra or ())
        for key, value in zip(literal.keys, literal.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                outputs.setdefault(key.value, expression_schema(value, assigned, input_types))
                keys.add(key.value)
            else:
                dynamic = True
        key_sets.append(keys)

    own_returns = [n for n in _own_nodes(execute) if isinstance(n, ast.Return)]
    for ret in own_returns:
        value = ret.value
        if isinstance(value, ast.Dict):
            take_dict(value)
        elif isinstance(value, ast.DictComp):
            dynamic = True
        elif isinstance(value, ast.Name) and (value.id in assigned or value.id in item_sets):
            source = assigned.get(value.id)
            items = item_sets.get(value.id, {})
            for key, item in items.items():
                outputs.setdefault(key, expression_schema(item, assigned, input_types))
            if isinstance(source, ast.Dict):
                take_dict(source, set(items))
            elif isinstance(source, ast.DictComp | ast.Call):
                dynamic = True
            elif source is not None:
                non_dict.append(ret.lineno)
            if value.id in dynamic_items:
                dynamic = True
        elif value is None or isinstance(value, ast.Constant | ast.List | ast.ListComp | ast.JoinedStr
                                         | ast.BinOp | ast.Compare | ast.Tuple):
            non_dict.append(ret.lineno)
        else:
            dynamic = True
    required = set.intersection(*key_sets) if key_sets else set()
    ordered = {key: schema for key, schema in outputs.items() if key in required}
    ordered.update({key: schema for key, schema in outputs.items() if key not in required})
    return ordered, required, dynamic, non_dict


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """Nodes of a function excluding those of nested functions and lambdas."""
    found: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _declared_capabilities(method: ast.AST | None) -> dict[str, Any] | None:
    if method is None:
        return None
    for node in _own_nodes(method):
        if isinstance(node, ast.Return) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                return None
            return value if isinstance(value, dict) else None
    return None


def collect(source: str) -> CodeFacts:
    """Parses and inspects agent source.

    Raises:
        SyntaxError: when the source does not parse.
    """
    tree = ast.parse(source)
    agent = find_agent_class(tree)
    methods = _methods(agent)
    execute = methods.get("execute")
    inputs_name: str | None = None
    reads: dict[str, InputRead] = {}
    dynamic_inputs = False
    outputs: dict[str, dict[str, Any]] = {}
    required_outputs: set[str] = set()
    dynamic_outputs = False
    non_dict: list[int] = []
    if execute is not None:
        params = [*execute.args.posonlyargs, *execute.args.args]
        if len(params) >= 2:
            inputs_name = params[1].arg
            visitor = _InputsVisitor(inputs_name)
            visitor.visit(execute)
            reads = visitor.reads
            for key in visitor.checked:
                if key in reads:
                    reads[key].required = False
            dynamic_inputs = visitor.dynamic
            usage = _usage_types(execute, visitor.bound)
            for key, read in reads.items():
                if read.type is None and key in usage:
                    read.type = usage[key]
            variable_types = {var: usage[key] for var, key in visitor.bound.items() if key in usage}
            outputs, required_outputs, dynamic_outputs, non_dict = _outputs(execute, variable_types)
    return CodeFacts(
        tree=tree, source=source, agent=agent, execute=execute, inputs_name=inputs_name,
        functions=_functions(tree), imports=_imports(tree), inputs=reads, outputs=outputs,
        required_outputs=required_outputs,
        dynamic_inputs=dynamic_inputs, dynamic_outputs=dynamic_outputs, non_dict_returns=non_dict,
        declared=_declared_capabilities(methods.get("get_capabilities")), methods=methods,
    )


def input_schema(facts: CodeFacts) -> dict[str, Any]:
    """JSON Schema of the inputs the code reads (declared schema used when reads are dynamic)."""
    declared = (facts.declared or {}).get("input_schema")
    if facts.dynamic_inputs and isinstance(declared, dict):
        return declared
    properties: dict[str, Any] = {}
    for key, read in sorted(facts.inputs.items(), key=lambda item: item[1].line):
        schema: dict[str, Any] = {"type": read.type} if read.type else {}
        if read.has_default and read.default is not None:
            schema["default"] = read.default
        properties[key] = schema
    required = [key for key, read in sorted(facts.inputs.items(), key=lambda item: item[1].line) if read.required]
    return {"type": "object", "required": required, "properties": properties}


def output_schema(facts: CodeFacts) -> dict[str, Any]:
    """JSON Schema of the outputs the code returns (declared schema used when keys are dynamic)."""
    declared = (facts.declared or {}).get("output_schema")
    if facts.dynamic_outputs and isinstance(declared, dict):
        return declared
    required = [key for key in facts.outputs if key in facts.required_outputs]
    schema: dict[str, Any] = {"type": "object", "required": required,
                              "properties": dict(facts.outputs)}
    if facts.dynamic_outputs:
        schema["additionalProperties"] = True
    return schema
