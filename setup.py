"""Build hook: every wheel carries the ``tdev`` package protoc generates from protos/ (metadata: pyproject.toml).

Editable installs skip it: there ``make proto`` writes the same code into gen/ (on sys.path via tdev_gen.pth).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _protogen() -> ModuleType:
    # Loaded by path: scripts/ is not a package, and the build must not import the project (its dependencies
    # need not be installed yet).
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "scripts" / "protogen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtos(build_py):
    """build_py, then the generated gRPC code and descriptor set into the build directory."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            _protogen().generate(ROOT / "protos", Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
