"""Helpers of the offline tests: load generated agent source and run it (tests only; services use the sandbox)."""

from __future__ import annotations

import ast
from typing import Any


def load_agent(code: str) -> Any:
    """Executes agent source and returns an instance of its agent class (the class defining execute)."""
    tree = ast.parse(code)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(classes) == 1, f"one class expected, got {classes}"
    namespace: dict[str, Any] = {"__name__": "agent"}
    exec(compile(code, "<agent>", "exec"), namespace)
    return namespace[classes[0]]()
