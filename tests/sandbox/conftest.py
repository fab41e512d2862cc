"""Fixtures for the sandbox tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets the test modules import sandbox_helpers

from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT

from tdev_common.sandbox import SandboxSettings


@pytest.fixture
def settings() -> SandboxSettings:
    return SandboxSettings(uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, pool_size=2, timeout_seconds=5.0)
