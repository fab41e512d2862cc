"""The registry: agents, their versions, lineage, search and execution metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import grpc
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from tdev_client.base import Page, ServiceClient, WatchPolicy
from tdev_client.types import (
    Agent,
    AgentAlias,
    AgentCase,
    GetAgentLineageResponse,
    ListAgentAliasesResponse,
    RecordExecutionsResponse,
    RegisterAgentResponse,
    SearchResult,
    VersionStats,
)


def _selector(agent: str) -> dict[str, str]:
    """An agent by id (``agent_`` + 12 hex digits) or else by name."""
    is_id = agent.startswith("agent_") and len(agent) == 18
    return {"agent_id": agent} if is_id else {"name": agent}


class RegistryClient(ServiceClient):
    """``tdev.registry.v1.RegistryService`` with plain values in and out."""

    def __init__(self, channel: grpc.aio.Channel, *, watch_policy: WatchPolicy | None = None) -> None:
        super().__init__(channel, pb2_grpc.RegistryServiceStub, watch_policy=watch_policy)

    async def register_agent(self, name: str, code: str, *, description: str = "", version: str = "",
                             parents: Sequence[Mapping[str, str]] = (), labels: Mapping[str, str] | None = None,
                             request_id: str = "") -> RegisterAgentResponse:
        """Validates and stores an agent; returns ``{"agent": ..., "created": bool}`` (False: same code again)."""
        return cast("RegisterAgentResponse", await self._call("RegisterAgent", pb2.RegisterAgentRequest, {
            "name": name, "code": code, "description": description, "version": version,
            "parents": [dict(p) for p in parents], "labels": dict(labels or {}), "request_id": request_id}))

    async def get_agent(self, agent: str, *, version: str = "", exclude_code: bool = False) -> Agent:
        """One agent version (latest unless ``version``), by id or name."""
        answer = await self._call("GetAgent", pb2.GetAgentRequest,
                                  {**_selector(agent), "version": version, "exclude_code": exclude_code})
        return cast("Agent", answer["agent"])

    async def list_agents(self, *, page_size: int = 0, page_token: str = "", name_contains: str = "",
                          capability: str = "", analysis_state: str | None = None, min_quality_score: float = 0.0,
                          order_by: str | None = None, exclude_code: bool = True) -> Page[Agent]:
        """One page of agents (latest versions); enums by name, e.g. ``analysis_state="STATE_SUCCEEDED"``."""
        return cast("Page[Agent]", await self._page("ListAgents", pb2.ListAgentsRequest, "agents", {
            "page_size": page_size, "page_token": page_token, "name_contains": name_contains,
            "capability": capability, "analysis_state": analysis_state, "min_quality_score": min_quality_score,
            "order_by": order_by, "exclude_code": exclude_code}))

    def iter_agents(self, *, name_contains: str = "", capability: str = "",
                    exclude_code: bool = True) -> AsyncIterator[Agent]:
        """Every agent, page after page."""
        return cast("AsyncIterator[Agent]", self._all_pages("ListAgents", pb2.ListAgentsRequest, "agents", {
            "name_contains": name_contains, "capability": capability, "exclude_code": exclude_code}))

    async def search_agents(self, query: str, *, top_k: int = 0,
                            min_quality_score: float = 0.0) -> list[SearchResult]:
        """Agents matching a plain-language query, best first, each with its score and reasons."""
        answer = await self._call("SearchAgents", pb2.SearchAgentsRequest,
                                  {"query": query, "top_k": top_k, "min_quality_score": min_quality_score})
        return cast("list[SearchResult]", answer["results"])

    async def list_agent_versions(self, agent: str, *, page_size: int = 0,
                                  page_token: str = "") -> Page[Agent]:
        """One page of an agent's versions, newest first."""
        return cast("Page[Agent]", await self._page("ListAgentVersions", pb2.ListAgentVersionsRequest, "versions",
                                {**_selector(agent), "page_size": page_size, "page_token": page_token}))

    async def get_agent_lineage(self, agent_id: str, *, version: str = "",
                                max_depth: int = 0) -> GetAgentLineageResponse:
        """``{"root", "edges", "agents"}``: the version's ancestors up to ``max_depth``."""
        return cast("GetAgentLineageResponse", await self._call("GetAgentLineage", pb2.GetAgentLineageRequest,
                                {"agent_id": agent_id, "version": version, "max_depth": max_depth}))

    async def get_agent_execution_stats(self, agent_id: str, *, version: str = "",
                                        start_time: str | None = None) -> VersionStats:
        """One version's executions since ``start_time`` (RFC 3339; None counts all): count, success rate, median."""
        answer = await self._call("GetAgentExecutionStats", pb2.GetAgentExecutionStatsRequest,
                                  {"agent_id": agent_id, "version": version, "start_time": start_time})
        return cast("VersionStats", answer["stats"])

    async def record_executions(self, records: Sequence[Mapping[str, Any]]) -> RecordExecutionsResponse:
        """Stores execution records (idempotent by record id); ``{"accepted_count", "duplicate_count"}``."""
        return cast("RecordExecutionsResponse", await self._call("RecordExecutions", pb2.RecordExecutionsRequest,
                                {"records": [dict(r) for r in records]}))

    async def update_agent_labels(self, agent_id: str, version: str, *, set_labels: Mapping[str, str] | None = None,
                                  remove_labels: Sequence[str] = (), request_id: str = "") -> Agent:
        """Sets and removes labels of one version; returns the agent."""
        answer = await self._call("UpdateAgentLabels", pb2.UpdateAgentLabelsRequest, {
            "agent_id": agent_id, "version": version, "set_labels": dict(set_labels or {}),
            "remove_labels": list(remove_labels), "request_id": request_id})
        return cast("Agent", answer["agent"])

    async def list_agent_cases(self, agent_id: str, *, version: str = "", filter: str | None = None,
                               page_size: int = 0, page_token: str = "") -> Page[AgentCase]:
        """One page of an agent's production cases, newest first; ``filter`` by name, e.g. ``"FILTER_FAILING"``."""
        page = await self._page("ListAgentCases", pb2.ListAgentCasesRequest, "cases", {
            "agent_id": agent_id, "version": version, "filter": filter, "page_size": page_size,
            "page_token": page_token})
        return cast("Page[AgentCase]", page)

    def iter_agent_cases(self, agent_id: str, *, version: str = "",
                         filter: str | None = None) -> AsyncIterator[AgentCase]:
        """Every production case of an agent, page after page."""
        found = self._all_pages("ListAgentCases", pb2.ListAgentCasesRequest, "cases",
                                {"agent_id": agent_id, "version": version, "filter": filter})
        return cast("AsyncIterator[AgentCase]", found)

    async def label_agent_case(self, case_id: str, expected: Mapping[str, Any]) -> AgentCase:
        """Labels a case with the output that was expected; returns the case."""
        answer = await self._call("LabelAgentCase", pb2.LabelAgentCaseRequest,
                                  {"case_id": case_id, "expected": dict(expected)})
        return cast("AgentCase", answer["case"])

    async def delete_agent_case(self, case_id: str) -> None:
        """Deletes a case for good."""
        await self._call("DeleteAgentCase", pb2.DeleteAgentCaseRequest, {"case_id": case_id})

    async def set_agent_alias(self, agent_id: str, alias: str, version: str, *, traffic_fraction: float = 0.0,
                              rollout: Mapping[str, Any] | None = None) -> AgentAlias:
        """Points an alias at a version; ``canary`` takes ``traffic_fraction`` of stable's executions and a
        ``rollout`` policy (``{"min_sample", "max_success_rate_drop", "max_latency_ratio",
        "min_latency_increase_ms"}``)."""
        answer = await self._call("SetAgentAlias", pb2.SetAgentAliasRequest, {
            "agent_id": agent_id, "alias": alias, "version": version, "traffic_fraction": traffic_fraction,
            "rollout": dict(rollout) if rollout is not None else None})
        return cast("AgentAlias", answer["alias"])

    async def list_agent_aliases(self, agent_id: str) -> ListAgentAliasesResponse:
        """``{"aliases", "events", "rollout"?}``: the aliases, latest alias events and a running rollout's numbers."""
        answer = await self._call("ListAgentAliases", pb2.ListAgentAliasesRequest, {"agent_id": agent_id})
        return cast("ListAgentAliasesResponse", answer)

    async def delete_agent_alias(self, agent_id: str, alias: str) -> None:
        """Removes an alias (removing "canary" ends a rollout by hand)."""
        await self._call("DeleteAgentAlias", pb2.DeleteAgentAliasRequest, {"agent_id": agent_id, "alias": alias})
