"""The service writes the sandbox runtime's bytecode before starting it (the runtime runs with -B)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tdev_common.sandbox import local_backend

pytestmark = pytest.mark.unit


def _copy_runtime(tmp_path: Path) -> Path:
    target = tmp_path / "runtime"
    shutil.copytree(local_backend.RUNTIME_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_every_runtime_module_gets_its_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _copy_runtime(tmp_path)
    monkeypatch.setattr(local_backend, "RUNTIME_DIR", runtime)
    local_backend.compile_runtime()
    modules = sorted(runtime.glob("*.py"))
    assert {"child.py", "runner.py", "zygote.py", "forker.py"} <= {m.name for m in modules}
    for module in modules:
        assert Path(importlib.util.cache_from_source(str(module))).is_file(), module.name
