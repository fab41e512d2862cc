"""The shared request rules name the exact field of every violation, however deep in a Struct it is."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tdev_common.request_guard import MAX_ID_LENGTH, request_violations

pytestmark = pytest.mark.unit


def _request(inputs: dict[str, object], **node: object) -> pb2.CreateWorkflowRequest:
    request = json_format.ParseDict(
        {"workflow": {"name": "w", "nodes": [{"id": "ok", "agent_id": "a"}, {"id": "n", "agent_id": "a", **node}]}},
        pb2.CreateWorkflowRequest(),
    )
    request.workflow.nodes[1].inputs.update(inputs)
    return request


def test_a_clean_request_has_no_violations() -> None:
    assert request_violations(_request({"a": "text", "b": 1.5, "c": [1, "x", {"d": True}], "e": None})) == []


def test_violations_in_struct_leaves_lists_and_keys_carry_their_paths() -> None:
    request = _request({"a": "x\x00", "b": [1, "ok", {"c": "y\x00"}], "k\x00": 1})
    request.workflow.nodes[1].inputs["n"] = math.nan
    found = {(v.field, v.description.split(" ")[0]) for v in request_violations(request)}
    assert found == {
        ("workflow.nodes[1].inputs.a", "must"),
        ("workflow.nodes[1].inputs.b[2].c", "must"),
        ("workflow.nodes[1].inputs.k\x00", "keys"),
        ("workflow.nodes[1].inputs.n", "must"),
    }


def test_ids_and_repeated_ids_are_length_checked_by_name() -> None:
    request = _request({}, depends_on=["ok", "x" * (MAX_ID_LENGTH + 1)])
    request.workflow.nodes[0].id = "y" * (MAX_ID_LENGTH + 1)
    fields = [v.field for v in request_violations(request)]
    assert fields == ["workflow.nodes[0].id", "workflow.nodes[1].depends_on[1]"]
