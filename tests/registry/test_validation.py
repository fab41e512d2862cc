"""Static validation of agent source: shape, signatures, syntax errors with positions, size limits."""

from __future__ import annotations

import pytest

from registry_svc.validation import next_minor, parse_version, validate_code
from tdev_common.errors import InvalidArgument

pytestmark = pytest.mark.unit  # no I/O

GOOD = '''
class Echo:
    """Echoes."""

    def get_capabilities(self) -> dict:
        return {"name": "echo"}

    def execute(self, inputs: dict) -> dict:
        return dict(inputs)
'''


def _problem(code: str, max_bytes: int = 10_000) -> str:
    with pytest.raises(InvalidArgument) as caught:
        validate_code(code, max_bytes)
    return caught.value.message


def test_validate_code_accepts_one_agent_class_with_helpers() -> None:
    code = GOOD + "\n\nclass Helper:\n    pass\n"
    facts = validate_code(code, 10_000)
    assert (facts.class_name, facts.execute_is_async) == ("Echo", False)


def test_validate_code_detects_async_execute() -> None:
    facts = validate_code(GOOD.replace("def execute", "async def execute"), 10_000)
    assert facts.execute_is_async is True


def test_validate_code_accepts_methods_inherited_from_a_class_in_the_module() -> None:
    code = ('class Base:\n    def get_capabilities(self) -> dict:\n        return {}\n\n'
            'class Agent(Base):\n    def execute(self, inputs):\n        return {}\n')
    assert validate_code(code, 10_000).class_name == "Agent"


def test_validate_code_reports_syntax_error_line_and_column() -> None:
    assert _problem("class A:\n    def execute(self, x)\n") == (
        "code: line 2, column 25: syntax error: expected ':'")


def test_validate_code_reports_compile_errors_that_parse_accepts() -> None:
    assert _problem("return 1\n").startswith("code: line 1, column 1: syntax error: 'return' outside function")


def test_validate_code_rejects_source_without_agent_class() -> None:
    assert _problem("x = 1\n") == (
        "code: line 1, column 1: no agent class: define one class with execute(self, inputs)")


def test_validate_code_rejects_two_agent_classes_naming_the_second() -> None:
    code = GOOD + GOOD.replace("Echo", "Other")
    assert _problem(code) == ("code: line 11, column 1: more than one agent class: Echo (line 2) and Other "
                              "both define execute; keep exactly one")


def test_validate_code_rejects_missing_get_capabilities() -> None:
    code = "class A:\n    def execute(self, inputs):\n        return {}\n"
    assert _problem(code) == "code: line 1, column 1: A has no get_capabilities(self) method"


def test_validate_code_rejects_init_with_required_arguments() -> None:
    code = GOOD.replace('"""Echoes."""', '"""Echoes."""\n\n    def __init__(self, api_key):\n        self.k = api_key')
    assert _problem(code) == ("code: line 5, column 5: Echo.__init__ must have no required arguments; "
                              "it requires api_key")


def test_validate_code_rejects_execute_without_inputs() -> None:
    assert _problem(GOOD.replace("def execute(self, inputs: dict)", "def execute(self)")) == (
        "code: line 8, column 5: Echo.execute must take (self, inputs)")


def test_validate_code_rejects_static_execute() -> None:
    code = GOOD.replace("    def execute", "    @staticmethod\n    def execute")
    assert "Echo.execute must be a plain method" in _problem(code)


def test_validate_code_rejects_async_get_capabilities() -> None:
    code = GOOD.replace("def get_capabilities", "async def get_capabilities")
    assert "get_capabilities must be a plain (not async) method" in _problem(code)


def test_validate_code_rejects_oversized_source_with_the_limit() -> None:
    assert _problem(GOOD, max_bytes=100) == f"code: source is {len(GOOD)} bytes; the limit is 100 bytes"


def test_validate_code_rejects_empty_and_null_bytes() -> None:
    assert _problem("   \n") == "code: source is empty"
    assert _problem("class A:\x00\n").startswith("code: ")


@pytest.mark.parametrize(("version", "expected"), [("1.0.0", "1.1.0"), ("1.9.7", "1.10.0"), ("0.0.1", "0.1.0")])
def test_next_minor_bumps_minor_and_resets_patch(version: str, expected: str) -> None:
    assert next_minor(version) == expected


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", ""])
def test_parse_version_rejects_non_semver(version: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_version(version)
