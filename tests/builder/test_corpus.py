"""The public corpus (examples/requirements/): every text builds offline with its acceptance cases and the
service it packages is right on fresh inputs the build never saw, through the real workflow service."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tdev.builder.v1 import build_pb2
from tdev.workflow.v1 import workflow_pb2 as wf_pb2

from tdev_common.llm.acceptance import mismatch
from tests.builder.conftest import REQUIREMENTS, Builder, Event, Mesh, build, get_build, plain, run_workflow, struct

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
CORPUS = sorted(path.name.removesuffix(".cases.json") for path in REQUIREMENTS.glob("*.cases.json"))


def acceptance_message(value: dict[str, Any]) -> build_pb2.AcceptanceCase:
    """A corpus case as an AcceptanceCase message."""
    return build_pb2.AcceptanceCase(
        name=value.get("name", ""), inputs=struct(value["inputs"]), expected=struct(value["expected"]),
        comparison=build_pb2.Comparison.Value("COMPARISON_" + value.get("comparison", "exact").upper()),
        tolerance=value.get("tolerance", 0.0))


async def test_corpus_has_at_least_thirty_texts_each_with_cases_and_fresh_inputs() -> None:
    assert len(CORPUS) >= 30
    for name in CORPUS:
        body = json.loads((REQUIREMENTS / f"{name}.cases.json").read_text(encoding="utf-8"))
        assert (REQUIREMENTS / f"{name}.txt").read_text(encoding="utf-8").strip(), name
        assert body["acceptance_cases"] and body["fresh"], name
        given = [json.dumps(c["inputs"], sort_keys=True) for c in body["acceptance_cases"]]
        assert not [c for c in body["fresh"] if json.dumps(c["inputs"], sort_keys=True) in given], name


@pytest.mark.parametrize("name", CORPUS)
async def test_corpus_text_builds_and_is_right_on_fresh_inputs(mesh: Mesh, builder: Builder, name: str) -> None:
    text = (REQUIREMENTS / f"{name}.txt").read_text(encoding="utf-8")
    body = json.loads((REQUIREMENTS / f"{name}.cases.json").read_text(encoding="utf-8"))
    events = await build(builder.stub, text, disable_reuse=True,
                         acceptance_cases=[acceptance_message(c) for c in body["acceptance_cases"]])
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED, events[-1].message
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.package.derived_examples_only is False
    for case in body["fresh"]:
        last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, case["inputs"])
        assert last.type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED, (case, last)
        problem = mismatch(case["expected"], plain(last.output), case.get("comparison", "exact"),
                           case.get("tolerance", 0.0))
        assert problem is None, (name, case["inputs"], problem)
