"""The documentation that states facts about the code stays true to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tdev_cli import config_doc

pytestmark = pytest.mark.unit  # no I/O

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_settings_classes() -> None:
    committed = config_doc.DOC_PATH.read_text(encoding="utf-8")
    assert committed == config_doc.render(), "run `python -m tdev_cli.config_doc` and commit docs/configuration.md"


def test_readme_names_only_settings_that_exist() -> None:
    reference = config_doc.DOC_PATH.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(TDEV_[A-Z0-9_]+)=?", readme))
    known = set(re.findall(r"`(TDEV_[A-Z0-9_]+)`", reference))
    assert named, "the README names no settings"
    assert named <= known, f"README names unknown settings: {sorted(named - known)}"


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:8]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)
