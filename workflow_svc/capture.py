"""Which node attempts become production cases for the registry, and what a case holds (redacted, capped)."""

from __future__ import annotations

import json

from tdev_common.redaction import redact_value
from workflow_svc.domain import CapturePolicy, JsonObject
from workflow_svc.routing import stable_fraction

DEFAULT_MAX_CASE_BYTES = 65536
REDACTED = "**redacted**"


def should_capture(policy: CapturePolicy, execution_id: str, node_id: str, success: bool) -> bool:
    """Every failure; a deterministic ``success_sample_rate`` share of successes (the same execution and node
    always decide the same way, so a retried report never changes its mind)."""
    if not policy.enabled:
        return False
    if not success:
        return True
    if policy.success_sample_rate <= 0.0:
        return False
    return stable_fraction(execution_id, node_id) < policy.success_sample_rate


def captured_case(policy: CapturePolicy, inputs: JsonObject, output: JsonObject | None, error_message: str,
                  source: str) -> JsonObject | None:
    """The case sent with the record: redacted inputs and output (or error); None when over the size cap."""
    keys = frozenset(policy.redact_keys)
    case: JsonObject = {"inputs": redact_value(inputs, keys, REDACTED), "source": source}
    if output is not None:
        case["output"] = redact_value(output, keys, REDACTED)
    if error_message:
        case["error_message"] = redact_value(error_message)
    limit = policy.max_case_bytes or DEFAULT_MAX_CASE_BYTES
    if len(json.dumps(case, separators=(",", ":"), default=str)) > limit:
        return None
    return case
