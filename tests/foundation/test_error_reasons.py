"""Every DomainError a service raises names what went wrong: no raise leaves the reason at the code's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tdev_common import errors

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["registry_svc", "workflow_svc", "builder_svc", "evolution_svc"]
# The base classes whose class-level reason is the bare code name (subclasses such as RequestIdReused or
# BudgetExceeded carry their own reason and need none at the raise site).
BARE = {
    name for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.DomainError) and value.reason == value.code.name
}
SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                 if "migrations" not in path.parts)


def bare_constructions(source: str) -> list[int]:
    """Lines constructing one of the BARE classes without ``reason=``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else (
            node.func.attr if isinstance(node.func, ast.Attribute) else "")
        if name in BARE and not any(keyword.arg == "reason" for keyword in node.keywords):
            lines.append(node.lineno)
    return lines


def test_the_walk_sees_the_base_classes_and_catches_a_bare_raise() -> None:
    assert {"InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted", "AlreadyExists"} <= BARE
    assert bare_constructions('raise NotFound("x")\nraise errors.InvalidArgument("y")\n') == [1, 2]
    assert bare_constructions('raise NotFound("x", reason="AGENT_NOT_FOUND")\n') == []


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_service_raises_a_domain_error_with_the_bare_code_name_as_reason(path: Path) -> None:
    lines = bare_constructions(path.read_text())
    assert not lines, f"{path.relative_to(ROOT)}: DomainError without reason= at lines {lines}"
