"""The evolution service: runs that improve an agent against a suite, watched generation by generation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import grpc
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc

from tdev_client.base import Page, ServiceClient, WatchPolicy
from tdev_client.types import (
    Candidate,
    EvolutionEvent,
    EvolutionPolicy,
    EvolutionRun,
    TriggerEvolutionPolicyResponse,
)


class EvolutionClient(ServiceClient):
    """``tdev.evolution.v1.EvolutionService`` with plain values in and out."""

    def __init__(self, channel: grpc.aio.Channel, *, watch_policy: WatchPolicy | None = None) -> None:
        super().__init__(channel, pb2_grpc.EvolutionServiceStub, watch_policy=watch_policy)

    async def start_evolution(self, agent_id: str, suite: Mapping[str, Any], *, agent_version: str = "",
                              config: Mapping[str, Any] | None = None, request_id: str = "") -> EvolutionRun:
        """Starts a run on an agent version with a suite (``{"cases": [{"inputs": {...}, "expected": {...}}]}``)."""
        answer = await self._call("StartEvolution", pb2.StartEvolutionRequest, {
            "agent_id": agent_id, "agent_version": agent_version, "suite": dict(suite),
            "config": dict(config) if config else None, "request_id": request_id})
        return cast("EvolutionRun", answer["run"])

    def watch_evolution(self, run_id: str, *, after_sequence: int = 0) -> AsyncIterator[EvolutionEvent]:
        """Every event after ``after_sequence`` until the run ends, reconnecting on its own."""
        events = self._events("WatchEvolution", pb2.WatchEvolutionRequest, {"run_id": run_id}, after_sequence)
        return cast("AsyncIterator[EvolutionEvent]", events)

    async def get_evolution(self, run_id: str, *, exclude_code: bool = False) -> EvolutionRun:
        """One run with its generations, best candidate and promotion."""
        answer = await self._call("GetEvolution", pb2.GetEvolutionRequest,
                                  {"run_id": run_id, "exclude_code": exclude_code})
        return cast("EvolutionRun", answer["run"])

    async def list_evolutions(self, *, page_size: int = 0, page_token: str = "", agent_id: str = "",
                              state: str | None = None) -> Page[EvolutionRun]:
        """One page of runs, newest first."""
        return cast("Page[EvolutionRun]", await self._page("ListEvolutions", pb2.ListEvolutionsRequest, "runs", {
            "page_size": page_size, "page_token": page_token, "agent_id": agent_id, "state": state}))

    def iter_evolutions(self, *, agent_id: str = "", state: str | None = None) -> AsyncIterator[EvolutionRun]:
        """Every run, page after page."""
        return cast("AsyncIterator[EvolutionRun]", self._all_pages("ListEvolutions", pb2.ListEvolutionsRequest, "runs",
                               {"agent_id": agent_id, "state": state}))

    async def list_candidates(self, run_id: str, *, page_size: int = 0, page_token: str = "",
                              exclude_code: bool = False) -> Page[Candidate]:
        """One page of the candidates a run evaluated (the seed, then each generation's children), each with its
        parents' code hashes; ordered by generation, then code hash."""
        return cast("Page[Candidate]", await self._page("ListCandidates", pb2.ListCandidatesRequest, "candidates", {
            "run_id": run_id, "page_size": page_size, "page_token": page_token, "exclude_code": exclude_code}))

    def iter_candidates(self, run_id: str, *, page_size: int = 0,
                        exclude_code: bool = False) -> AsyncIterator[Candidate]:
        """Every candidate of a run, page after page."""
        return cast("AsyncIterator[Candidate]", self._all_pages(
            "ListCandidates", pb2.ListCandidatesRequest, "candidates",
            {"run_id": run_id, "page_size": page_size, "exclude_code": exclude_code}))

    async def cancel_evolution(self, run_id: str, *, reason: str = "") -> EvolutionRun:
        """Asks a running evolution to stop; returns it."""
        answer = await self._call("CancelEvolution", pb2.CancelEvolutionRequest, {"run_id": run_id, "reason": reason})
        return cast("EvolutionRun", answer["run"])

    async def set_evolution_policy(self, policy: Mapping[str, Any]) -> EvolutionPolicy:
        """Creates or replaces an agent's evolution policy (``{"agent_id", "trigger": {...}, ...}``)."""
        answer = await self._call("SetEvolutionPolicy", pb2.SetEvolutionPolicyRequest, {"policy": dict(policy)})
        return cast("EvolutionPolicy", answer["policy"])

    async def get_evolution_policy(self, agent_id: str) -> EvolutionPolicy:
        """An agent's evolution policy with its status."""
        answer = await self._call("GetEvolutionPolicy", pb2.GetEvolutionPolicyRequest, {"agent_id": agent_id})
        return cast("EvolutionPolicy", answer["policy"])

    async def list_evolution_policies(self, *, page_size: int = 0, page_token: str = "") -> Page[EvolutionPolicy]:
        """One page of evolution policies by agent id."""
        return cast("Page[EvolutionPolicy]", await self._page(
            "ListEvolutionPolicies", pb2.ListEvolutionPoliciesRequest, "policies",
            {"page_size": page_size, "page_token": page_token}))

    def iter_evolution_policies(self) -> AsyncIterator[EvolutionPolicy]:
        """Every evolution policy, page after page."""
        return cast("AsyncIterator[EvolutionPolicy]",
                    self._all_pages("ListEvolutionPolicies", pb2.ListEvolutionPoliciesRequest, "policies", {}))

    async def delete_evolution_policy(self, agent_id: str) -> None:
        """Removes an agent's evolution policy."""
        await self._call("DeleteEvolutionPolicy", pb2.DeleteEvolutionPolicyRequest, {"agent_id": agent_id})

    async def trigger_evolution_policy(self, agent_id: str, *, reason: str = "") -> TriggerEvolutionPolicyResponse:
        """Starts the policy's automatic run now; ``{"policy", "run"}``."""
        return cast("TriggerEvolutionPolicyResponse", await self._call(
            "TriggerEvolutionPolicy", pb2.TriggerEvolutionPolicyRequest, {"agent_id": agent_id, "reason": reason}))
