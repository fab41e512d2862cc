"""Which executions a canary takes: a deterministic share, so an execution resumed after a crash (or by another
replica) runs the same version as before."""

from __future__ import annotations

import hashlib

STABLE_ALIAS = "stable"
CANARY_ALIAS = "canary"


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``: the one way this service draws a deterministic share (canary
    routing, capture sampling), so a retried or resumed execution always decides the same way."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def canary_bucket(execution_id: str, agent_id: str) -> float:
    """A number in [0, 1) fixed by the execution and agent; the canary takes the executions below its share."""
    return stable_fraction(execution_id, agent_id)
