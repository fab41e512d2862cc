"""Synthesis operators (no model): they write code the program never contained, from a typed grammar.

The grammar builds expressions of a wanted kind (int, float, str, bool, list) over the names in scope
(typed by a small static inference seeded with the suite's input values), literals drawn from the suite
and the program, and a library of builtins and common ``str``/``list`` methods. Operators:

* ``synth:expression`` replaces a typed expression with a generated one of the same kind;
* ``synth:term`` extends an expression with a new term (``e + t``, ``e * t``, ``e - t``, ``t + e``);
* ``synth:wrap`` wraps an expression in a kind-preserving call (``min``, ``max``, ``abs``, ``round``,
  ``int``, ``float``, ``sorted``, ``str.lower``/``strip``/``title``, ...);
* ``synth:comprehension`` maps over or filters a list (``[g(x) for x in e]``, ``[x for x in e if c]``);
* ``synth:guard`` inserts an ``if`` on a generated condition that assigns a generated value to a name in
  scope (a clamp) or returns early (a base case, an empty-input answer);
* ``synth:return_shape`` repairs the returned object from the suite's expected keys (adds a missing key,
  drops an unexpected one, rewrites the value of a wrong one);
* ``synth:reorder`` swaps two positional arguments of a call or the operands of a non-commutative
  operator or comparison (``a - b`` -> ``b - a``, ``f(x, y)`` -> ``f(y, x)``).

Guidance: mutation points are chosen, most of the time, among the expressions the wrong output keys
depend on (dataflow from the returned dict's values for those keys back through the assignments).
Like ``transforms.py``, every operator returns new source or None, never touches ``get_capabilities``,
imports, docstrings or key strings, and drops programs that do not load.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from evolution_svc.domain import EvaluationCase, JsonValue
from evolution_svc.programs import FROZEN_FUNCTIONS
from evolution_svc.transforms import _blocks, _finish, _first_editable, _is_key, _Slot, _slots

SYNTH_EXPRESSION = "synth:expression"
SYNTH_TERM = "synth:term"
SYNTH_WRAP = "synth:wrap"
SYNTH_COMPREHENSION = "synth:comprehension"
SYNTH_GUARD = "synth:guard"
SYNTH_RETURN_SHAPE = "synth:return_shape"
SYNTH_REORDER = "synth:reorder"

# Share of mutation points drawn from the dataflow slice of the wrong keys when there is one.
GUIDED_SHARE = 0.75
MAX_LITERALS = 40
MAX_STRING_LITERAL = 16
LOOP_VARIABLE = "item"

Kind = str  # "int", "float", "str", "bool", "dict", "list" or "list[<kind>]"
NUMBERS = ("int", "float")


def kind_of(value: JsonValue) -> Kind | None:
    """The grammar kind of a JSON value (lists carry their first element's kind)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        inner = kind_of(value[0]) if value else None
        return f"list[{inner}]" if inner and not inner.startswith("list") else "list"
    return None


def _element(kind: Kind | None) -> Kind | None:
    if kind and kind.startswith("list[") and kind.endswith("]"):
        return kind[5:-1]
    return None


def _matches(have: Kind | None, want: Kind) -> bool:
    if have is None:
        return False
    if want == "num":
        return have in NUMBERS
    if want == "list":
        return have.startswith("list")
    if want == "float":
        return have in NUMBERS
    return have == want


def _scalars(value: JsonValue) -> Iterable[JsonValue]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value is not None:
        yield value


@dataclass(frozen=True)
class SuiteFacts:
    """What the suite says about the program's interface: input and output kinds, and its literals."""

    input_kinds: tuple[tuple[str, Kind], ...] = ()
    expected_kinds: tuple[tuple[str, Kind], ...] = ()
    literals: tuple[JsonValue, ...] = ()


def facts_from_cases(cases: Sequence[EvaluationCase]) -> SuiteFacts:
    """The facts of the training cases (first non-empty value of each key decides its kind)."""
    inputs: dict[str, Kind] = {}
    expected: dict[str, Kind] = {}
    literals: dict[tuple[str, JsonValue], None] = {}
    for case in cases:
        for key, value in case.inputs.items():
            kind = kind_of(value)
            if kind and (key not in inputs or inputs[key] == "list"):
                inputs[key] = kind
        for key, value in (case.expected or {}).items():
            kind = kind_of(value)
            if kind and (key not in expected or expected[key] == "list"):
                expected[key] = kind
        # Numbers come from the inputs only: an expected number as a literal lets a program return the
        # answer of one case, a near miss that lures the search away from the computation.
        outputs = [value for value in _scalars(case.expected or {}) if isinstance(value, str)]
        for value in (*_scalars(case.inputs), *outputs):
            if isinstance(value, bool):
                continue
            if isinstance(value, int) and abs(value) > 1000:
                continue
            if isinstance(value, str) and len(value) > MAX_STRING_LITERAL:
                continue
            literals.setdefault((type(value).__name__, value), None)
    for value in (0, 1, 2, -1, "", " "):
        literals.setdefault((type(value).__name__, value), None)
    ordered = sorted(literals, key=lambda item: (item[0], repr(item[1])))
    # Suite literals that recur matter most; keep the small ones when there are many.
    chosen = [value for _, value in ordered if not isinstance(value, float) or abs(value) < 1e6][:MAX_LITERALS]
    return SuiteFacts(tuple(sorted(inputs.items())), tuple(sorted(expected.items())), tuple(chosen))


# -- typing ---------------------------------------------------------------------------------------------
STR_METHODS_STR = ("lower", "upper", "title", "strip", "capitalize", "lstrip", "rstrip", "swapcase")
STR_METHODS_INT = ("count", "find")
STR_METHODS_BOOL = ("startswith", "endswith", "isdigit", "isalpha")


class _Scope:
    """The kinds of the names of one function, and the function's inputs parameter."""

    def __init__(self, function: ast.FunctionDef | ast.AsyncFunctionDef, facts: SuiteFacts,
                 params: dict[str, Kind]) -> None:
        self.facts = facts
        self.inputs_name = ""
        self.kinds: dict[str, Kind] = dict(params)
        # Inference results per node, valid while ``kinds`` is the same dict (see ``infer``).
        self._memo: dict[int, tuple[ast.expr, Kind | None]] = {}
        self._memo_for: dict[str, Kind] | None = None
        args = [arg.arg for arg in function.args.args]
        if function.name == "execute" and len(args) >= 2:
            self.inputs_name = args[1]
        for _ in range(2):  # twice: a name used before the line that types it (loops) gets its kind
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    self._learn(node.targets[0].id, self.infer(node.value))
                elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                    self._learn(node.target.id, self.infer(node.value))
                elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
                    self._learn(node.target.id, _element(self.infer(node.iter)) or self._string_iteration(node.iter))
        self._memo_for = self.kinds

    def _string_iteration(self, node: ast.expr) -> Kind | None:
        return "str" if self.infer(node) == "str" else None

    def _learn(self, name: str, kind: Kind | None) -> None:
        if kind is not None and name not in self.kinds:
            self.kinds[name] = kind

    def input_key(self, node: ast.expr) -> str | None:
        """``k`` for ``inputs["k"]`` (or ``inputs.get("k", ...)``)."""
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == self.inputs_name
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            return node.slice.value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == self.inputs_name
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            return node.args[0].value
        return None

    def infer(self, node: ast.expr) -> Kind | None:
        """The kind of an expression, or None when the inference cannot tell (memoised per node)."""
        if self._memo_for is None:
            return self._infer(node)
        if self._memo_for is not self.kinds:
            # Names changed (a comprehension's variable): earlier answers may no longer hold.
            self._memo, self._memo_for = {}, self.kinds
        entry = self._memo.get(id(node))
        if entry is not None and entry[0] is node:
            return entry[1]
        kind = self._infer(node)
        self._memo[id(node)] = (node, kind)
        return kind

    def _infer(self, node: ast.expr) -> Kind | None:
        if isinstance(node, ast.Constant):
            return kind_of(node.value)
        if isinstance(node, ast.Name):
            return self.kinds.get(node.id)
        key = self.input_key(node)
        if key is not None:
            return dict(self.facts.input_kinds).get(key)
        if isinstance(node, ast.Subscript):
            base = self.infer(node.value)
            if isinstance(node.slice, ast.Slice):
                return base
            if base == "str":
                return "str"
            return _element(base)
        if isinstance(node, ast.BinOp):
            left, right = self.infer(node.left), self.infer(node.right)
            if left in NUMBERS and right in NUMBERS:
                if isinstance(node.op, ast.Div) or "float" in (left, right):
                    return "float"
                return "int"
            if isinstance(node.op, ast.Add) and left == right:
                return left
            if isinstance(node.op, ast.Mult) and {left, right} == {"str", "int"}:
                return "str"
            if isinstance(node.op, ast.Mod) and left == "str":
                return "str"
            return None
        if isinstance(node, ast.UnaryOp):
            return "bool" if isinstance(node.op, ast.Not) else self.infer(node.operand)
        if isinstance(node, ast.Compare | ast.BoolOp):
            if isinstance(node, ast.BoolOp):
                kinds = {self.infer(value) for value in node.values}
                return kinds.pop() if len(kinds) == 1 else None
            return "bool"
        if isinstance(node, ast.IfExp):
            return self.infer(node.body) or self.infer(node.orelse)
        if isinstance(node, ast.JoinedStr):
            return "str"
        if isinstance(node, ast.ListComp):
            return self._comprehension_kind(node)
        if isinstance(node, ast.List):
            inner = self.infer(node.elts[0]) if node.elts else None
            return f"list[{inner}]" if inner and not inner.startswith("list") else "list"
        if isinstance(node, ast.Dict):
            return "dict"
        if isinstance(node, ast.Call):
            return self._call_kind(node)
        return None

    def _comprehension_kind(self, node: ast.ListComp) -> Kind:
        generator = node.generators[0]
        saved = self.kinds
        if isinstance(generator.target, ast.Name):
            element = _element(self.infer(generator.iter)) or self._string_iteration(generator.iter)
            if element:
                self.kinds = {**saved, generator.target.id: element}
        inner = self.infer(node.elt)
        self.kinds = saved
        return f"list[{inner}]" if inner and not inner.startswith("list") else "list"

    def _call_kind(self, node: ast.Call) -> Kind | None:
        func = node.func
        first = self.infer(node.args[0]) if node.args else None
        if isinstance(func, ast.Name):
            name = func.id
            if name in ("len", "int"):
                return "int"
            if name == "float":
                return "float"
            if name == "str":
                return "str"
            if name == "bool":
                return "bool"
            if name == "round":
                return "int" if len(node.args) == 1 else "float"
            if name in ("abs",):
                return first
            if name in ("min", "max"):
                if len(node.args) == 1:
                    return _element(first)
                kinds = {self.infer(arg) for arg in node.args}
                return "float" if "float" in kinds else first
            if name in ("sorted", "list", "reversed"):
                return first if first and first.startswith("list") else ("list[str]" if first == "str" else None)
            if name == "sum":
                return _element(first) or "int"
            if name in ("any", "all"):
                return "bool"
            return None
        if isinstance(func, ast.Attribute):
            owner = self.infer(func.value)
            if func.attr in STR_METHODS_STR or func.attr == "replace":
                return "str" if owner in ("str", None) else None
            if func.attr == "join":
                return "str"
            if func.attr == "split":
                return "list[str]"
            if func.attr in STR_METHODS_INT:
                return "int"
            if func.attr in STR_METHODS_BOOL:
                return "bool"
        return None

    def names(self, want: Kind) -> list[str]:
        """Names in scope of a kind."""
        return sorted(name for name, kind in self.kinds.items() if _matches(kind, want) and name != "self")

    def input_keys(self, want: Kind) -> list[str]:
        """Input keys of a kind."""
        if not self.inputs_name:
            return []
        return [key for key, kind in self.facts.input_kinds if _matches(kind, want)]


# -- the grammar ----------------------------------------------------------------------------------------
def _literals(facts: SuiteFacts, want: Kind, extra: Sequence[JsonValue] = ()) -> list[JsonValue]:
    pool = [*facts.literals, *extra]
    values = {(type(value).__name__, value): value for value in pool if _matches(kind_of(value), want)}
    return [values[key] for key in sorted(values, key=lambda item: (item[0], repr(item[1])))]


class _Grammar:
    """Random typed expressions for one scope."""

    def __init__(self, scope: _Scope, rng: random.Random, program_literals: Sequence[JsonValue]) -> None:
        self.scope = scope
        self.rng = rng
        self.program_literals = program_literals

    def terminal(self, want: Kind, *, literal: bool = True) -> ast.expr | None:
        options: list[Callable[[], ast.expr]] = []
        for name in self.scope.names(want):
            options.append(lambda name=name: ast.Name(name, ast.Load()))  # type: ignore[misc]
        for key in self.scope.input_keys(want):
            options.append(
                lambda key=key: ast.Subscript(  # type: ignore[misc]
                    ast.Name(self.scope.inputs_name, ast.Load()), ast.Constant(key), ast.Load()
                )
            )
        variables = len(options)
        wanted = "num" if want == "float" else want
        values = _literals(self.scope.facts, wanted, self.program_literals) if literal else []
        if not options and not values:
            return None
        # Names and inputs as likely as literals overall, whatever the sizes of the two pools.
        if values and (not options or self.rng.random() < 0.35):
            return ast.Constant(self.rng.choice(values))
        return options[self.rng.randrange(variables)]()

    def expression(self, want: Kind, depth: int) -> ast.expr | None:
        """An expression of kind ``want`` at most ``depth`` operators deep, or None when none can be built."""
        if depth <= 0 or self.rng.random() < 0.3:
            found = self.terminal(want)
            if found is not None or depth <= 0:
                return found
        builders = {
            "int": self._number,
            "float": self._number,
            "num": self._number,
            "str": self._string,
            "bool": self._condition,
        }
        builder = builders.get(want)
        if builder is None and want.startswith("list"):
            builder = self._list
        if builder is None:
            return self.terminal(want)
        for _ in range(4):
            built = builder(want, depth - 1)
            if built is not None:
                return built
        return self.terminal(want)

    def _number(self, want: Kind, depth: int) -> ast.expr | None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.45:
            left, right = self.expression(want, depth), self.expression(want, depth)
            if left is None or right is None:
                return None
            ops: list[type[ast.operator]] = [ast.Add, ast.Sub, ast.Mult]
            ops.append(ast.FloorDiv if want == "int" else ast.Div)
            return ast.BinOp(left, rng.choice(ops)(), right)
        if choice < 0.6:
            inner = self.expression(want, depth)
            return None if inner is None else _call("abs", inner)
        if choice < 0.75:
            left, right = self.expression(want, depth), self.terminal(want)
            if left is None or right is None:
                return None
            return _call(rng.choice(("min", "max")), left, right)
        if choice < 0.9 and want != "float":
            sized = self.expression(rng.choice(("str", "list")), depth)
            return None if sized is None else _call("len", sized)
        listed = self.expression("list[int]", depth) or self.expression("list[float]", depth)
        return None if listed is None else _call(rng.choice(("sum", "max", "min")), listed)

    def _string(self, want: Kind, depth: int) -> ast.expr | None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.45:
            inner = self.expression("str", depth)
            return None if inner is None else _method(inner, rng.choice(STR_METHODS_STR))
        if choice < 0.6:
            inner = self.expression("str", depth)
            old, new = self.terminal("str"), self.terminal("str")
            if inner is None or old is None or new is None:
                return None
            return _method(inner, "replace", old, new)
        if choice < 0.7:
            number = self.expression("int", depth)
            return None if number is None else _call("str", number)
        if choice < 0.85:
            parts = self.expression("list[str]", depth)
            separator = self.terminal("str")
            return None if parts is None or separator is None else _method(separator, "join", parts)
        left, right = self.expression("str", depth), self.expression("str", depth)
        return None if left is None or right is None else ast.BinOp(left, ast.Add(), right)

    def _condition(self, want: Kind, depth: int) -> ast.expr | None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.6:
            kind = rng.choice(("int", "int", "float", "str"))
            left = self.expression(kind, depth)
            right = self.terminal(kind)
            if left is None or right is None:
                return None
            ops: list[type[ast.cmpop]] = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq]
            return ast.Compare(left, [rng.choice(ops)()], [right])
        if choice < 0.8:
            sized = self.expression(rng.choice(("str", "list")), depth)
            return None if sized is None else ast.UnaryOp(ast.Not(), sized)
        needle, haystack = self.terminal("str"), self.expression(rng.choice(("str", "list[str]")), depth)
        if needle is None or haystack is None:
            return None
        return ast.Compare(needle, [rng.choice((ast.In, ast.NotIn))()], [haystack])

    def _list(self, want: Kind, depth: int) -> ast.expr | None:
        rng = self.rng
        inner = self.terminal(want, literal=False) if want != "list" else self.terminal("list", literal=False)
        if inner is None:
            return None
        choice = rng.random()
        if choice < 0.4:
            return _call("sorted", inner)
        if choice < 0.6:
            return _call("list", _call("reversed", inner))
        if choice < 0.8:
            count = self.terminal("int")
            return None if count is None else ast.Subscript(inner, ast.Slice(None, count, None), ast.Load())
        return self.comprehension(inner, self.scope.infer(inner) or want, depth)

    def comprehension(self, iterable: ast.expr, kind: Kind, depth: int) -> ast.expr | None:
        """``[g(item) for item in iterable]`` or ``[item for item in iterable if c(item)]``."""
        element = _element(kind) or ("str" if kind == "str" else None)
        if element is None:
            return None
        variable = LOOP_VARIABLE if LOOP_VARIABLE not in self.scope.kinds else f"{LOOP_VARIABLE}_"
        saved = self.scope.kinds
        self.scope.kinds = {variable: element}  # the body should read the element, not the scope
        try:
            if self.rng.random() < 0.5:
                body = self.expression(element, max(1, depth))
                condition = None
            else:
                body = ast.Name(variable, ast.Load())
                self.scope.kinds = {**saved, variable: element}
                condition = self.expression("bool", max(1, depth))
        finally:
            self.scope.kinds = saved
        if body is None or (condition is None and isinstance(body, ast.Name)):
            return None
        reader = body if condition is None else condition
        if not any(isinstance(node, ast.Name) and node.id == variable for node in ast.walk(reader)):
            return None
        generator = ast.comprehension(ast.Name(variable, ast.Store()), iterable, [condition] if condition else [], 0)
        return ast.ListComp(body, [generator])


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


def _method(owner: ast.expr, name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Attribute(owner, name, ast.Load()), list(args), [])


# -- where to edit ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Function:
    node: ast.FunctionDef | ast.AsyncFunctionDef
    scope: _Scope


def _functions(tree: ast.Module, facts: SuiteFacts) -> list[_Function]:
    """The agent's editable methods with their scopes; ``execute`` first, helpers typed from call sites."""
    methods = [
        node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name not in FROZEN_FUNCTIONS
        and node.name != "__init__"
    ]
    methods.sort(key=lambda node: node.name != "execute")
    found: list[_Function] = []
    params: dict[str, dict[str, Kind]] = {}
    for method in methods:
        scope = _Scope(method, facts, params.get(method.name, {}))
        found.append(_Function(method, scope))
        # Types of helper parameters from the calls ``self.helper(args)`` in this method.
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
            ):
                target = next((m for m in methods if m.name == node.func.attr), None)
                if target is None:
                    continue
                names = [arg.arg for arg in target.args.args[1:]]
                for name, arg in zip(names, node.args, strict=False):
                    kind = scope.infer(arg)
                    if kind:
                        params.setdefault(target.name, {}).setdefault(name, kind)
    return found


def _loaded_names(node: ast.AST) -> set[str]:
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load)}


def _assigned_names(statement: ast.stmt) -> set[str]:
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = list(statement.targets)
    elif isinstance(statement, ast.AugAssign | ast.AnnAssign | ast.For):
        targets = [statement.target]
    return {child.id for target in targets for child in ast.walk(target) if isinstance(child, ast.Name)}


def dataflow_slice(function: ast.FunctionDef | ast.AsyncFunctionDef, wrong_keys: Sequence[str]) -> set[int]:
    """Ids of the nodes the wrong output keys depend on: their returned values, then the assignments of the
    names those read, transitively (and the conditions of the blocks holding them). Empty without returns."""
    roots: list[ast.AST] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Dict) and wrong_keys:
                picked = [
                    item
                    for key, item in zip(value.keys, value.values, strict=True)
                    if isinstance(key, ast.Constant) and key.value in wrong_keys
                ]
                roots.extend(picked or [value])
            else:
                roots.append(value)
    names: set[str] = set()
    for root in roots:
        names |= _loaded_names(root)
    statements = [node for node in ast.walk(function) if isinstance(node, ast.stmt)]
    chosen: list[ast.AST] = list(roots)
    taken: set[int] = set()
    changed = True
    while changed:
        changed = False
        for statement in statements:
            if id(statement) in taken or not (_assigned_names(statement) & names):
                continue
            taken.add(id(statement))
            part: ast.AST = statement.iter if isinstance(statement, ast.For) else statement
            if isinstance(statement, ast.Assign | ast.AugAssign | ast.AnnAssign) and statement.value is not None:
                part = statement.value
            chosen.append(part)
            names |= _loaded_names(part)
            changed = True
    return {id(node) for root in chosen for node in ast.walk(root)}


def _expression_sites(function: _Function, want: Callable[[Kind], bool]) -> list[tuple[_Slot, Kind]]:
    sites: list[tuple[_Slot, Kind]] = []
    scope = function.scope
    for slot in _slots(function.node):
        node = slot.node
        if not isinstance(node, ast.expr) or isinstance(getattr(node, "ctx", None), ast.Store | ast.Del):
            continue
        if _is_key(slot) or (isinstance(slot.parent, ast.comprehension) and slot.field == "target"):
            continue
        if isinstance(slot.parent, ast.Call) and slot.field == "func":
            continue
        if isinstance(slot.parent, ast.Attribute) and isinstance(node, ast.Name) and node.id == "self":
            continue
        if isinstance(node, ast.Name) and node.id in ("self", scope.inputs_name):
            continue
        kind = scope.infer(node)
        if kind is not None and want(kind):
            sites.append((slot, kind))
    return sites


@dataclass
class _Edit:
    """What one operator application works on."""

    tree: ast.Module
    rng: random.Random
    facts: SuiteFacts
    wrong_keys: tuple[str, ...]
    functions: list[_Function]
    literals: list[JsonValue]

    def grammar(self, function: _Function) -> _Grammar:
        return _Grammar(function.scope, self.rng, self.literals)

    def site(self, want: Callable[[Kind], bool], *, outermost: bool = False) -> tuple[_Function, _Slot, Kind] | None:
        """A mutation point of a wanted kind: from the wrong keys' dataflow slice most of the time.

        ``outermost`` keeps only whole expressions (an assigned or returned value, an argument), not their parts.
        """
        everywhere: list[tuple[_Function, _Slot, Kind]] = []
        guided: list[tuple[_Function, _Slot, Kind]] = []
        for function in self.functions:
            relevant = dataflow_slice(function.node, self.wrong_keys) if function.node.name == "execute" else set()
            for slot, kind in _expression_sites(function, want):
                if outermost and isinstance(slot.parent, ast.BinOp | ast.UnaryOp | ast.BoolOp | ast.Compare):
                    continue
                everywhere.append((function, slot, kind))
                if id(slot.node) in relevant:
                    guided.append((function, slot, kind))
        if not everywhere:
            return None
        if guided and self.rng.random() < GUIDED_SHARE:
            return self.rng.choice(guided)
        return self.rng.choice(everywhere)


def _any_kind(kind: Kind) -> bool:
    return kind in ("int", "float", "str", "bool") or kind.startswith("list")


def _replace(edit: _Edit) -> bool:
    found = edit.site(_any_kind)
    if found is None:
        return False
    function, slot, kind = found
    new = edit.grammar(function).expression(kind, edit.rng.choice((1, 1, 2)))
    if new is None:
        return False
    slot.put(new)
    return True


def _analogue(edit: _Edit, function: _Function, kind: Kind) -> ast.expr | None:
    """A copy of an expression of the program of this kind with its variables renamed to others of their kind
    (``x * x`` -> ``y * y``): terms of a formula tend to look alike."""
    scope = function.scope
    shapes = [
        slot.node
        for slot, found in _expression_sites(function, lambda have: have == kind)
        if not isinstance(slot.node, ast.Name | ast.Constant) and scope.input_key(slot.node) is None  # type: ignore[arg-type]
    ]
    if not shapes:
        return None
    term = copy.deepcopy(edit.rng.choice(shapes))
    assert isinstance(term, ast.expr)
    names = [node for node in ast.walk(term) if isinstance(node, ast.Name) and node.id in scope.kinds]
    if not names:
        return None
    renames: dict[str, str] = {}
    for name in sorted({node.id for node in names}):
        others = [other for other in scope.names(scope.kinds[name]) if other != name]
        if others:
            renames[name] = edit.rng.choice(others)
    if not renames:
        return None
    for node in names:
        node.id = renames.get(node.id, node.id)
    return term


def _term(edit: _Edit) -> bool:
    # A missing term of a formula is added to the whole formula more often than to one of its factors.
    found = edit.site(lambda kind: kind in ("int", "float", "str"), outermost=edit.rng.random() < 0.6)
    if found is None:
        return False
    function, slot, kind = found
    term = _analogue(edit, function, kind) if edit.rng.random() < 0.4 else None
    term = term or edit.grammar(function).expression(kind, edit.rng.choice((0, 1, 1, 2)))
    if term is None or not isinstance(slot.node, ast.expr):
        return False
    old = copy.deepcopy(slot.node)
    if kind == "str":
        slot.put(ast.BinOp(old, ast.Add(), term) if edit.rng.random() < 0.5 else ast.BinOp(term, ast.Add(), old))
        return True
    op = edit.rng.choice((ast.Add, ast.Add, ast.Sub, ast.Mult))()
    slot.put(ast.BinOp(old, op, term) if edit.rng.random() < 0.8 else ast.BinOp(term, op, old))
    return True


def _wrap(edit: _Edit) -> bool:
    found = edit.site(lambda kind: kind in ("int", "float", "str") or kind.startswith("list"))
    if found is None:
        return False
    function, slot, kind = found
    node = slot.node
    assert isinstance(node, ast.expr)
    rng = edit.rng
    old = copy.deepcopy(node)
    if kind in NUMBERS:
        choice = rng.randrange(6)
        if choice < 2:
            bound = edit.grammar(function).terminal(kind)
            if bound is None:
                return False
            slot.put(_call(("min", "max")[choice], old, bound))
        else:
            slot.put(_call(("abs", "round", "int", "float")[choice - 2], old))
        return True
    if kind == "str":
        if rng.random() < 0.85:
            slot.put(_method(old, rng.choice(STR_METHODS_STR)))
        else:
            slot.put(_call("str", old))
        return True
    choice = rng.randrange(4)
    if choice == 0:
        slot.put(_call("sorted", old))
    elif choice == 1:
        slot.put(ast.Call(ast.Name("sorted", ast.Load()), [old], [ast.keyword("reverse", ast.Constant(True))]))
    elif choice == 2:
        slot.put(_call("list", _call("reversed", old)))
    else:
        # dict.fromkeys keeps the first occurrence order (a set would not be reproducible for strings).
        slot.put(_call("list", _method(ast.Name("dict", ast.Load()), "fromkeys", old)))
    return True


def _comprehension(edit: _Edit) -> bool:
    found = edit.site(lambda kind: kind.startswith("list[") or kind == "str")
    if found is None:
        return False
    function, slot, kind = found
    if isinstance(slot.parent, ast.comprehension):
        return False
    assert isinstance(slot.node, ast.expr)
    built = edit.grammar(function).comprehension(copy.deepcopy(slot.node), kind, edit.rng.choice((1, 2)))
    if built is None:
        return False
    if kind == "str":
        built = _method(ast.Constant(""), "join", built) if _element(function.scope.infer(built)) == "str" else None
        if built is None:
            return False
    slot.put(built)
    return True


def _returns(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Return]:
    return [node for node in ast.walk(function) if isinstance(node, ast.Return) and node.value is not None]


def _guard(edit: _Edit) -> bool:
    rng = edit.rng
    function = rng.choice(edit.functions)
    blocks = [block for block in (function.node.body, *_blocks(function.node)) if block]
    if not blocks:
        return False
    block = rng.choice(blocks)
    grammar = edit.grammar(function)
    returns = _returns(function.node)
    body: ast.stmt | None = None
    target: str | None = None
    if returns and rng.random() < 0.5:
        early = copy.deepcopy(rng.choice(returns))
        value = early.value
        assert value is not None
        if isinstance(value, ast.Dict) and value.values:
            position = rng.randrange(len(value.values))
            kind = function.scope.infer(value.values[position])
            new = grammar.expression(kind, rng.choice((0, 1))) if kind else None
            if new is not None:
                value.values[position] = new
        else:
            kind = function.scope.infer(value)
            new = grammar.expression(kind, rng.choice((0, 0, 1))) if kind else None
            if new is not None and rng.random() < 0.8:
                early.value = new
        body = early
    else:
        names = [name for name, kind in function.scope.kinds.items() if _any_kind(kind) and name != "self"]
        if not names:
            return False
        target = rng.choice(sorted(names))
        kind = function.scope.kinds[target]
        value_expression = grammar.expression(kind, rng.choice((0, 1)))
        if value_expression is None:
            return False
        body = ast.Assign([ast.Name(target, ast.Store())], value_expression, lineno=0)  # unparse reads lineno
    condition: ast.expr | None = None
    # Conditions on one name in scope (``x > 100``, ``not items``) are what guards usually test.
    named = target
    if named is None:
        names = sorted(name for name, kind in function.scope.kinds.items() if _any_kind(kind) and name != "self")
        named = rng.choice(names) if names else None
    if named is not None and rng.random() < 0.7:
        kind = function.scope.kinds[named]
        bound = grammar.terminal(kind)
        if bound is not None and kind in (*NUMBERS, "str"):
            ops: list[type[ast.cmpop]] = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq]
            condition = ast.Compare(ast.Name(named, ast.Load()), [rng.choice(ops)()], [bound])
        elif kind.startswith("list") or kind == "str":
            condition = ast.UnaryOp(ast.Not(), ast.Name(named, ast.Load()))
    if condition is None:
        condition = grammar.expression("bool", rng.choice((1, 1, 2)))
    if condition is None:
        return False
    start = _first_editable(block)
    positions = list(range(start, len(block) + 1))
    if target is not None:
        # A clamp belongs after the name's assignment: prefer the places right after one.
        after = [i + 1 for i in range(start, len(block)) if target in _assigned_names(block[i])]
        positions = after if after and rng.random() < 0.8 else positions
    block.insert(rng.choice(positions), ast.If(condition, [body], []))
    return True


def _return_shape(edit: _Edit) -> bool:
    rng = edit.rng
    execute = next((function for function in edit.functions if function.node.name == "execute"), None)
    expected = dict(edit.facts.expected_kinds)
    if execute is None or not expected:
        return False
    returns = _returns(execute.node)
    if not returns:
        return False
    statement = rng.choice(returns)
    value = statement.value
    assert value is not None
    grammar = edit.grammar(execute)
    if not isinstance(value, ast.Dict):
        kind = execute.scope.infer(value)
        keys = [key for key, want in expected.items() if kind is None or _matches(kind, want)] or list(expected)
        statement.value = ast.Dict([ast.Constant(rng.choice(sorted(keys)))], [value])
        return True
    present = [key.value for key in value.keys if isinstance(key, ast.Constant)]
    missing = sorted(key for key in expected if key not in present)
    extra = [index for index, key in enumerate(present) if key not in expected]
    if missing:
        key = rng.choice(missing)
        new = grammar.expression(expected[key], rng.choice((0, 1)))
        if new is None:
            return False
        value.keys.append(ast.Constant(key))
        value.values.append(new)
        return True
    if extra:
        index = rng.choice(extra)
        del value.keys[index]
        del value.values[index]
        return True
    wrong = [
        index
        for index, key in enumerate(value.keys)
        if isinstance(key, ast.Constant) and key.value in edit.wrong_keys and key.value in expected
    ]
    if not wrong:
        return False
    index = rng.choice(wrong)
    named = value.keys[index]
    assert isinstance(named, ast.Constant)
    new = grammar.expression(expected[str(named.value)], rng.choice((0, 1, 2)))
    if new is None:
        return False
    value.values[index] = new
    return True


def _reorder(edit: _Edit) -> bool:
    sites: list[ast.AST] = []
    guided: list[ast.AST] = []
    for function in edit.functions:
        relevant = dataflow_slice(function.node, edit.wrong_keys) if function.node.name == "execute" else set()
        for slot in _slots(function.node):
            node = slot.node
            swappable = (
                (isinstance(node, ast.Call) and len(node.args) >= 2)
                or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub | ast.Div | ast.FloorDiv | ast.Mod))
                or (isinstance(node, ast.Compare) and len(node.ops) == 1)
            )
            if swappable:
                sites.append(node)
                if id(node) in relevant:
                    guided.append(node)
    if not sites:
        return False
    node = edit.rng.choice(guided if guided and edit.rng.random() < GUIDED_SHARE else sites)
    if isinstance(node, ast.Call):
        first, second = sorted(edit.rng.sample(range(len(node.args)), 2))
        node.args[first], node.args[second] = node.args[second], node.args[first]
    elif isinstance(node, ast.BinOp):
        node.left, node.right = node.right, node.left
    elif isinstance(node, ast.Compare):
        node.left, node.comparators[0] = node.comparators[0], node.left
    return True


OPERATORS: dict[str, Callable[[_Edit], bool]] = {
    SYNTH_EXPRESSION: _replace,
    SYNTH_TERM: _term,
    SYNTH_WRAP: _wrap,
    SYNTH_COMPREHENSION: _comprehension,
    SYNTH_GUARD: _guard,
    SYNTH_RETURN_SHAPE: _return_shape,
    SYNTH_REORDER: _reorder,
}
SYNTHESIS_OPERATORS: tuple[str, ...] = tuple(OPERATORS)


def _program_literals(tree: ast.Module) -> list[JsonValue]:
    values: list[JsonValue] = []
    for slot in _slots(tree):
        node = slot.node
        if isinstance(node, ast.Constant) and not _is_key(slot) and isinstance(node.value, int | float | str):
            if not isinstance(node.value, str) or len(node.value) <= MAX_STRING_LITERAL:
                values.append(node.value)
    return values


def mutate(
    code: str, operator: str, rng: random.Random, facts: SuiteFacts, wrong_keys: Sequence[str] = ()
) -> str | None:
    """Applies one synthesis operator; ``wrong_keys`` (the parent's wrong output keys) guide where.

    Raises:
        KeyError: for an unknown operator name.
    """
    apply = OPERATORS[operator]
    tree = ast.parse(code)
    functions = _functions(tree, facts)
    if not functions:
        return None
    edit = _Edit(tree, rng, facts, tuple(wrong_keys), functions, _program_literals(tree))
    if not apply(edit):
        return None
    return _finish(tree, code)
