"""Which registry agent an agent file belongs to: the name it gets by default, and the guard that keeps a file
from being filed as a new version of an unrelated agent (``tdev agents register``, ``tdev evolve FILE``)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from tdev_client import NotFound, RegistryClient

# The registry's own rule for names (registry_svc/validation.py); a declared name breaking it is not used.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


NAME_HELP = ("Agent name (default: the \"name\" its get_capabilities() returns as a literal, else its class name "
             "in snake case, e.g. WordCount -> word_count). Refused when the name is an agent of another class.")
NEW_VERSION_OF_HELP = ("Register the file as the next version of this existing agent (name or id) even though its "
                       "class differs; the agent must exist.")


class RegistrationRefused(Exception):
    """The file defines a different agent than the one it would be filed under; the message says what to do."""


@dataclass(frozen=True)
class AgentIdentity:
    """What an agent file says about itself, read with ``ast`` (the code is never run here)."""

    class_name: str
    declared_name: str | None

    @property
    def default_name(self) -> str:
        """The name declared by ``get_capabilities()``, else the class name in snake case."""
        return self.declared_name or snake_case(self.class_name)


def snake_case(class_name: str) -> str:
    """``WordCount`` -> ``word_count``, ``HTTPFetch`` -> ``http_fetch``."""
    return _WORD_BOUNDARY.sub("_", class_name).lower()


def read_identity(code: str) -> AgentIdentity | None:
    """The agent class of ``code`` and the ``"name"`` its ``get_capabilities`` returns as a literal.

    None when the code does not parse or has no single class with ``execute``: the registry then rejects it
    with the precise reason, so nothing is guessed here.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    agents = [cls for cls in classes if "execute" in _methods(cls, classes)]
    if len(agents) != 1:
        return None
    agent = agents[0]
    capabilities = _methods(agent, classes).get("get_capabilities")
    return AgentIdentity(agent.name, _declared_name(capabilities) if capabilities is not None else None)


def _methods(cls: ast.ClassDef, classes: list[ast.ClassDef]) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Methods of ``cls``, with those inherited from classes of the same module (as the registry counts them)."""
    by_name = {item.name: item for item in classes}
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    seen: set[str] = set()

    def collect(current: ast.ClassDef) -> None:
        if current.name in seen:
            return
        seen.add(current.name)
        for base in reversed(current.bases):
            if isinstance(base, ast.Name) and base.id in by_name:
                collect(by_name[base.id])
        for statement in current.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                found[statement.name] = statement

    collect(cls)
    return found


def _declared_name(method: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The string under ``"name"`` of a dict literal the method returns, when it is a valid registry name."""
    for node in ast.walk(method):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "name" and isinstance(value, ast.Constant)
                        and isinstance(value.value, str) and _NAME.match(value.value)):
                    return value.value
    return None


async def registration_name(registry: RegistryClient, path: Path, code: str, *, name: str = "",
                            new_version_of: str = "") -> str:
    """The registry name ``path`` is registered under, after checking it is the same agent.

    ``new_version_of`` (a name or id of an existing agent) files the code under that agent whatever its class;
    otherwise the name is ``name`` or the file's default name (see :class:`AgentIdentity`; the file's stem only
    when the code has no readable agent class, which the registry then rejects), and an existing agent of that
    name must have the same class (and the same declared capabilities name, when both declare one).

    Raises:
        RegistrationRefused: the name belongs to an agent of another class.
        TdevError: the registry failed, or ``new_version_of`` names no agent (NotFound).
    """
    if new_version_of:
        return (await registry.get_agent(new_version_of, exclude_code=True))["name"]
    identity = read_identity(code)
    target = name or (identity.default_name if identity is not None else path.stem)
    if identity is None:
        return target
    try:
        latest = await registry.get_agent(target, exclude_code=True)
    except NotFound:
        return target  # a new agent
    declared = (latest.get("declared_capabilities") or {}).get("name")
    if latest["class_name"] != identity.class_name:
        difference = f"{target} {latest['version']} is class {latest['class_name']}, the file defines class " \
                     f"{identity.class_name}"
    elif isinstance(declared, str) and identity.declared_name and declared != identity.declared_name:
        difference = f"{target} {latest['version']} declares the name {declared!r}, the file declares " \
                     f"{identity.declared_name!r}"
    else:
        return target
    raise RegistrationRefused(
        f"{path} is not a version of agent {target}: {difference}. Register it under its own --name, or pass "
        f"--new-version-of {target} to file it as the next version of {target} anyway."
    )
