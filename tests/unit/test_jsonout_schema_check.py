"""A caller's JSON Schema is checked against the metaschema once per distinct schema; a bad one fails every time."""

from __future__ import annotations

from unittest import mock

import pytest
from jsonschema import Draft202012Validator, SchemaError

from tdev_common.llm import jsonout

pytestmark = pytest.mark.unit


def test_a_valid_schema_is_checked_once_and_a_bad_one_every_time() -> None:
    schema = {"type": "object", "properties": {"tally": {"type": "integer"}}, "required": ["tally"]}
    with mock.patch.object(Draft202012Validator, "check_schema", wraps=Draft202012Validator.check_schema) as spy:
        jsonout.check_schema(schema)
        jsonout.check_schema(dict(reversed(list(schema.items()))))  # the same schema, keys in another order
        assert spy.call_count == 1
        for _ in range(2):
            with pytest.raises(SchemaError):
                jsonout.check_schema({"type": "object", "properties": {"tally": {"type": 5}}})
        assert spy.call_count == 3
        jsonout.check_schema({"type": "object", "properties": {"tally": {"type": "string"}}})  # another schema
        assert spy.call_count == 4
