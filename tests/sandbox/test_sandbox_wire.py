"""The service's validation of what an execution process answers (no processes: payloads as bytes)."""

from __future__ import annotations

import pytest

from tdev_common.sandbox import Job, JobMode, Limits, OutcomeKind, wire
from tdev_common.sandbox.settings import DEFAULT_PRELOAD_MODULES
from tdev_common.sandbox.wire import outcome_from_child

pytestmark = pytest.mark.unit

CAP = 1 << 20


@pytest.mark.parametrize(
    "output",
    [b'{"a":NaN}', b'{"a":[Infinity]}', b'{"a":{"b":-Infinity}}', b'{"a":1e400}', b'{"a":-' + b"9" * 320 + b"}"],
)
def test_non_finite_numbers_are_invalid_output_never_ok(output: bytes) -> None:
    outcome = outcome_from_child(b'{"kind":"ok","output":' + output + b"}", 0.0, CAP)

    assert outcome.kind is OutcomeKind.INVALID_OUTPUT and outcome.output is None


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul() -> None:
    outcome = outcome_from_child(b'{"kind":"ok","output":{"a":"\\\\u0000"}}', 0.0, CAP)

    assert outcome.kind is OutcomeKind.OK and outcome.output == {"a": "\\u0000"}


def test_output_nested_32_levels_is_accepted_and_33_is_not() -> None:
    ok = outcome_from_child(b'{"kind":"ok","output":{"x":' + b"[" * 31 + b"]" * 31 + b"}}", 0.0, CAP)
    deep = outcome_from_child(b'{"kind":"ok","output":{"x":' + b"[" * 32 + b"]" * 32 + b"}}", 0.0, CAP)

    assert ok.kind is OutcomeKind.OK
    assert deep.kind is OutcomeKind.INVALID_OUTPUT and "nested more than 32 levels" in deep.detail


def test_nesting_deeper_than_the_parser_allows_is_invalid_output_not_an_exception() -> None:
    outcome = outcome_from_child(b'{"kind":"ok","output":{"x":' + b"[" * 200_000 + b"]" * 200_000 + b"}}", 0.0, CAP)

    assert outcome.kind is OutcomeKind.INVALID_OUTPUT


def test_output_over_the_cap_is_output_too_large_even_if_the_process_claims_ok() -> None:
    outcome = outcome_from_child(b'{"kind":"ok","output":{"s":"' + b"y" * 2000 + b'"}}', 0.0, 1024)

    assert outcome.kind is OutcomeKind.OUTPUT_TOO_LARGE
    assert outcome.detail == "output of 2008 bytes exceeds the limit of 1024"


def test_a_load_failure_cannot_claim_success() -> None:
    outcome = outcome_from_child(b'{"kind":"ok","output":{}}', 0.0, CAP, fatal=True)

    assert outcome.kind is OutcomeKind.INVALID_OUTPUT


def test_diagnostic_texts_are_kept_with_nul_and_surrogates_replaced() -> None:
    payload = b'{"kind":"error","error":{"type":"E","message":"a\\u0000b\\ud800"},"stdout":"x\\u0000"}'

    outcome = outcome_from_child(payload, 0.0, CAP)

    assert outcome.error is not None and outcome.error.message == "a\ufffdb\ufffd"
    assert outcome.stdout == "x\ufffd"


@pytest.mark.parametrize(
    ("code", "imported"),
    [("import a, b.c as d,e\n", {"a", "b.c", "e"}),
     ("from x.y import (z,\n   w)\n", {"x.y"}),
     ("  import q\n", {"q"}),
     ("# import commented\nx = 'import nothing'\n", set()),
     ("from . import sibling\n", {"."})],
)
def test_imports_are_read_from_the_source(code: str, imported: set[str]) -> None:
    assert wire.imported_modules(code) == imported


def test_jobs_are_routed_by_what_they_import() -> None:
    preloaded = frozenset(DEFAULT_PRELOAD_MODULES.split(","))

    def flavor(code: str) -> str:
        return wire.flavor(Job(JobMode.RUN, code, [], Limits()), preloaded)

    assert flavor("import json\n") == "sync"
    assert flavor("import dataclasses\n") == "async"
    assert flavor("from urllib import parse\n") == "async"
    assert flavor("class A:\n    async def execute(self, inputs):\n        return {}\n") == "async"
    assert wire.flavor(Job(JobMode.RUN, "import dataclasses\n", [], Limits())) == "sync"  # nothing preloaded
