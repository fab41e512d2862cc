"""Callers that give up mid-write (short deadlines) never wedge the registry: their writes run to the end.

Before tdev_common.completion, eight RegisterAgent calls with 1-50 ms deadlines left an SQLite write lock held
in most runs of 40 rounds: the next write waited out the 30 s busy timeout and failed, and so did the stop.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, register, tiny_agent

pytestmark = pytest.mark.mesh  # real servers or subprocesses

ROUNDS = 40
CALLS_PER_ROUND = 8


async def test_calls_cancelled_mid_write_leave_later_writes_and_the_stop_prompt(registry: Registry) -> None:
    rng = random.Random(7)
    slowest = 0.0
    given_up = 0
    for round_number in range(ROUNDS):
        calls = [
            registry.stub.RegisterAgent(
                pb2.RegisterAgentRequest(name=f"cut_{round_number}_{i}", code=tiny_agent(f"cut{round_number}x{i}")),
                timeout=rng.uniform(0.001, 0.05),
            )
            for i in range(CALLS_PER_ROUND)
        ]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        given_up += sum(isinstance(a, grpc.aio.AioRpcError) and a.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                        for a in answers)
        started = time.perf_counter()
        await asyncio.wait_for(register(registry.stub, f"kept_{round_number}", tiny_agent(f"kept{round_number}")),
                               timeout=10)
        slowest = max(slowest, time.perf_counter() - started)
    assert given_up > ROUNDS  # the deadlines really cut calls short
    assert slowest < 5.0, f"a write after cancelled ones took {slowest:.1f} s"
    # What the cut calls began is whole: each of their agents either exists with its version or does not.
    listed = await registry.stub.ListAgents(pb2.ListAgentsRequest(page_size=1000))
    names = {agent.name for agent in listed.agents}
    assert {f"kept_{n}" for n in range(ROUNDS)} <= names
    for name in sorted(n for n in names if n.startswith("cut_"))[:20]:
        got = await registry.stub.GetAgent(pb2.GetAgentRequest(name=name))
        assert got.agent.version == "1.0.0" and got.agent.code
    started = time.perf_counter()
    await registry.close()
    assert time.perf_counter() - started < 5.0
