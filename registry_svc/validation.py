"""Static validation of agent source with ``ast`` (never executed here): shape, signatures, size limits."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from registry_svc.domain import NAME_PATTERN, CodeFacts, LabelUpdate, VersionRef
from tdev_common.errors import FIELD_REQUIRED, InvalidArgument, invalid_field, require

SEMVER = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")
MAX_DESCRIPTION_CHARS = 4000
MAX_LABELS = 32
MAX_LABEL_CHARS = 256
MAX_PARENTS = 16
MAX_REQUEST_ID_CHARS = 128
LABEL_KEY = re.compile(r"^[a-z0-9_.-]{1,63}$")
MAX_LABELS_PER_VERSION = 64


INVALID_CODE = "INVALID_CODE"


def _invalid(field: str, problem: str) -> InvalidArgument:
    return invalid_field(field, problem)


def _bad_code(problem: str) -> InvalidArgument:
    """The agent source breaks the contract (does not parse, wrong shape, too large): reason INVALID_CODE."""
    return invalid_field("code", problem, reason=INVALID_CODE)


def _at(node: ast.AST, problem: str) -> InvalidArgument:
    line = getattr(node, "lineno", 0)
    column = getattr(node, "col_offset", -1) + 1
    return _bad_code(f"line {line}, column {column}: {problem}")


def parse_version(version: str) -> tuple[int, int, int]:
    """Parses ``MAJOR.MINOR.PATCH``.

    Raises:
        InvalidArgument: when ``version`` is not a plain semantic version.
    """
    match = SEMVER.match(version)
    if match is None:
        raise _invalid("version", f'"{version}" is not a semantic version like 1.2.0')
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


def next_minor(version: str) -> str:
    """``1.4.2`` -> ``1.5.0``."""
    major, minor, _ = parse_version(version)
    return f"{major}.{minor + 1}.0"


def check_name(name: str, field: str = "name") -> None:
    """Raises InvalidArgument unless ``name`` is 1-100 of letters, digits, '_', '-' and '.'."""
    if not NAME_PATTERN.match(name):
        raise _invalid(field, f'"{name[:120]}" must be 1 to 100 letters, digits, "_", "-" or "."')


def check_request_fields(description: str, labels: Mapping[str, str], parents: tuple[VersionRef, ...],
                         request_id: str) -> None:
    """Checks the non-code fields of RegisterAgent.

    Raises:
        InvalidArgument: naming the field and the limit broken.
    """
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise _invalid("description", f"{len(description)} characters; the limit is {MAX_DESCRIPTION_CHARS}")
    if len(labels) > MAX_LABELS:
        raise _invalid("labels", f"{len(labels)} labels; the limit is {MAX_LABELS}")
    for key, value in labels.items():
        if not key or len(key) > 63 or len(value) > MAX_LABEL_CHARS:
            raise _invalid(f"labels[{key[:63]}]", f"keys are 1-63 characters, values at most {MAX_LABEL_CHARS}")
    if len(parents) > MAX_PARENTS:
        raise _invalid("parents", f"{len(parents)} parents; the limit is {MAX_PARENTS}")
    for index, parent in enumerate(parents):
        if not parent.agent_id or not parent.version:
            raise _invalid(f"parents[{index}]", "agent_id and version are both required")
        parse_version_at(parent.version, f"parents[{index}].version")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise _invalid("request_id", f"{len(request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}")


def check_label_update(update: LabelUpdate) -> None:
    """Checks an UpdateAgentLabels request before anything is read or written.

    Keys set are 1-63 of ``a-z 0-9 _ . -`` (stricter than RegisterAgent's labels, which predate this rule;
    such older keys can still be removed), values at most 256 characters.

    Raises:
        InvalidArgument: naming the field and, for labels, the key.
    """
    require("agent_id", update.ref.agent_id)
    if not update.ref.version:
        raise invalid_field("version", "is required: an exact version such as 1.2.0", reason=FIELD_REQUIRED)
    parse_version_at(update.ref.version, "version")
    if not update.set_labels and not update.remove_labels:
        raise _invalid("set_labels", "nothing to change: give set_labels or remove_labels")
    if len(update.set_labels) > MAX_LABELS_PER_VERSION:
        raise _invalid("set_labels", f"{len(update.set_labels)} labels; the limit is {MAX_LABELS_PER_VERSION}")
    for key, value in sorted(update.set_labels.items()):
        if not LABEL_KEY.match(key):
            raise _invalid(f"set_labels[{key[:63]}]",
                           'keys are 1 to 63 characters of a-z, 0-9, "_", "." and "-"')
        if len(value) > MAX_LABEL_CHARS:
            raise _invalid(f"set_labels[{key}]", f"value is {len(value)} characters; the limit is {MAX_LABEL_CHARS}")
    for index, key in enumerate(update.remove_labels):
        if not key or len(key) > 63:
            raise _invalid(f"remove_labels[{index}]", "keys are 1 to 63 characters")
        if key in update.set_labels:
            raise _invalid(f"remove_labels[{index}]", f'"{key}" is also in set_labels; set or remove a key, not both')
    if len(update.request_id) > MAX_REQUEST_ID_CHARS:
        raise _invalid("request_id", f"{len(update.request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}")


def parse_version_at(version: str, field: str) -> tuple[int, int, int]:
    """:func:`parse_version` reporting ``field`` as the culprit."""
    try:
        return parse_version(version)
    except InvalidArgument:
        raise _invalid(field, f'"{version}" is not a semantic version like 1.2.0') from None


def _required_positional(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    required = positional[: len(positional) - len(args.defaults)]
    required_kwonly = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return [a.arg for a in (*required, *required_kwonly)]


def _decorator_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Name):
            names.add(decorator.id)
        elif isinstance(decorator, ast.Attribute):
            names.add(decorator.attr)
    return names


Method = ast.FunctionDef | ast.AsyncFunctionDef


def _methods(cls: ast.ClassDef, classes: Mapping[str, ast.ClassDef], seen: set[str] | None = None) -> dict[str, Method]:
    """Methods of ``cls`` including those inherited from classes of the same module (own ones win)."""
    seen = seen or set()
    seen.add(cls.name)
    found: dict[str, Method] = {}
    for base in reversed(cls.bases):
        if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
            found.update(_methods(classes[base.id], classes, seen))
    for statement in cls.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            found[statement.name] = statement
    return found


def _check_execute(cls: ast.ClassDef, execute: Method) -> None:
    if _decorator_names(execute) & {"staticmethod", "classmethod", "property"}:
        raise _at(execute, f"{cls.name}.execute must be a plain method execute(self, inputs)")
    positional = [*execute.args.posonlyargs, *execute.args.args]
    if len(positional) < 2:
        raise _at(execute, f"{cls.name}.execute must take (self, inputs)")
    extra = _required_positional(execute)[2:]
    if extra:
        raise _at(execute, f"{cls.name}.execute has required arguments beyond (self, inputs): {', '.join(extra)}")


def _check_get_capabilities(cls: ast.ClassDef, method: Method) -> None:
    if isinstance(method, ast.AsyncFunctionDef):
        raise _at(method, f"{cls.name}.get_capabilities must be a plain (not async) method")
    if _decorator_names(method) & {"staticmethod", "classmethod", "property"}:
        raise _at(method, f"{cls.name}.get_capabilities must be a plain method get_capabilities(self)")
    positional = [*method.args.posonlyargs, *method.args.args]
    if not positional:
        raise _at(method, f"{cls.name}.get_capabilities must take self")
    extra = _required_positional(method)[1:]
    if extra:
        raise _at(method, f"{cls.name}.get_capabilities takes required arguments: {', '.join(extra)}")


def _check_init(cls: ast.ClassDef, init: Method) -> None:
    if isinstance(init, ast.AsyncFunctionDef):
        raise _at(init, f"{cls.name}.__init__ cannot be async")
    extra = _required_positional(init)[1:]
    if extra:
        raise _at(init, f"{cls.name}.__init__ must have no required arguments; it requires {', '.join(extra)}")


def validate_code(code: str, max_bytes: int) -> CodeFacts:
    """Checks that ``code`` is one agent class with the required methods, without running it.

    Raises:
        InvalidArgument: naming the line and the problem (syntax errors with line and column), or the
            size limit when the source is too large.
    """
    size = len(code.encode("utf-8"))
    if size > max_bytes:
        raise _bad_code(f"source is {size} bytes; the limit is {max_bytes} bytes")
    if not code.strip():
        raise _bad_code("source is empty")
    try:
        tree = ast.parse(code, filename="<agent>")
        compile(tree, "<agent>", "exec", dont_inherit=True)
    except SyntaxError as error:
        line, column = error.lineno or 0, error.offset or 0
        raise _bad_code(f"line {line}, column {column}: syntax error: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise _bad_code(f"cannot be parsed: {error}") from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    agents = [cls for cls in classes.values() if "execute" in _methods(cls, classes)]
    if not agents:
        raise _bad_code("line 1, column 1: no agent class: define one class with execute(self, inputs)")
    if len(agents) > 1:
        first, second = agents[0], agents[1]
        raise _at(second, f"more than one agent class: {first.name} (line {first.lineno}) and {second.name} "
                          "both define execute; keep exactly one")
    cls = agents[0]
    methods = _methods(cls, classes)
    execute = methods["execute"]
    _check_execute(cls, execute)
    capabilities = methods.get("get_capabilities")
    if capabilities is None:
        raise _at(cls, f"{cls.name} has no get_capabilities(self) method")
    _check_get_capabilities(cls, capabilities)
    init = methods.get("__init__")
    if init is not None:
        _check_init(cls, init)
    return CodeFacts(
        class_name=cls.name,
        execute_is_async=isinstance(execute, ast.AsyncFunctionDef),
        line_count=len(code.splitlines()),
    )
