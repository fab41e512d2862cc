"""The example agents register cleanly over gRPC and do what they say when run in the real sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tdev_common.sandbox import Sandbox, SandboxSettings
from tests.registry.conftest import EXAMPLES, Stack, analysed, register, start_registry

pytestmark = pytest.mark.mesh  # real servers or subprocesses

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "word_count": ({"text": "one two  three\nfour"}, {"words": 4, "characters": 19, "lines": 2}),
    "text_normalize": ({"text": "  Hello,\tWORLD!  ", "strip_punctuation": True}, {"text": "hello world"}),
    "keyword_extract": ({"text": "Graph graph nodes and the graph edges nodes", "top_k": 2},
                        {"keywords": ["graph", "nodes"], "counts": {"graph": 3, "nodes": 2}}),
    "json_select_fields": ({"data": [{"a": 1, "b": 2}, {"a": 3}], "fields": ["a", "b"]},
                           {"data": [{"a": 1, "b": 2}, {"a": 3}]}),
    "json_flatten": ({"data": {"a": {"b": 1}, "c": [2, {"d": 3}]}}, {"data": {"a.b": 1, "c.0": 2, "c.1.d": 3}}),
    "list_stats": ({"numbers": [1, 2, 3, 4]},
                   {"count": 4, "sum": 10, "min": 1, "max": 4, "mean": 2.5, "median": 2.5, "stdev": 1.118033988749895}),
    "sum_numbers": ({"numbers": [1, 2, 3.5]}, {"total": 6.5}),
    "sort_numbers": ({"numbers": [3, 1, 2], "descending": True}, {"numbers": [3, 2, 1]}),
    "csv_to_records": ({"csv": "name,age\nada,36\nbob,x\n"},
                       {"records": [{"name": "ada", "age": 36}, {"name": "bob", "age": "x"}],
                        "columns": ["name", "age"]}),
    "records_filter": ({"records": [{"n": 1}, {"n": 5}, {"m": 9}], "field": "n", "op": "gt", "value": 2},
                       {"records": [{"n": 5}], "count": 1}),
}


def test_every_example_has_a_case() -> None:
    assert sorted(CASES) == sorted(path.stem for path in EXAMPLES.glob("*.py"))
    assert len(CASES) >= 8


async def test_examples_register_cleanly_and_analyse_with_full_static_scores(tmp_path: Path) -> None:
    registry = await start_registry(Stack("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'ex.sqlite'}", None), tmp_path)
    try:
        for name in CASES:
            answer = await register(registry.stub, name, (EXAMPLES / f"{name}.py").read_text())
            assert answer.created and answer.agent.declared_capabilities["name"] == name
            done = await analysed(registry.stub, answer.agent.agent_id)
            assert done.analysis.static_metrics["static_score"] == 1.0, name
            assert done.analysis.quality_score >= 0.9, name
    finally:
        await registry.close()


async def test_examples_compute_what_they_promise_in_the_sandbox() -> None:
    sandbox = await Sandbox.start(SandboxSettings.for_embedded())
    try:
        for name, (inputs, expected) in CASES.items():
            outcome = await sandbox.run((EXAMPLES / f"{name}.py").read_text(), inputs)
            assert outcome.ok, (name, outcome)
            assert outcome.output == expected, name
    finally:
        await sandbox.close()
