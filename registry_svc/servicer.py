"""gRPC surface of the registry service: request -> service call -> response, nothing else."""

from __future__ import annotations

import grpc
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from registry_svc import convert
from registry_svc.aliases import AliasService
from registry_svc.cases import CaseService
from registry_svc.response_cache import ResponseCache
from registry_svc.service import RegistryService


class RegistryServiceServicer(pb2_grpc.RegistryServiceServicer):
    """Implements tdev.registry.v1.RegistryService."""

    def __init__(self, service: RegistryService, responses: ResponseCache[pb2.GetAgentResponse],
                 cases: CaseService, aliases: AliasService) -> None:
        self._service = service
        self._responses = responses
        self._cases = cases
        self._aliases = aliases

    async def RegisterAgent(
        self, request: pb2.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.RegisterAgentResponse:
        """Validates, loads in the sandbox and stores agent code."""
        registration = await self._service.register(convert.register_command(request))
        return convert.register_response(registration)

    async def GetAgent(
        self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentResponse:
        """Returns one agent version, from the response cache when it can."""
        key = convert.get_agent_key(request)
        cached = self._responses.get_now(key)
        if cached is not None:
            return cached
        return await self._responses.get_or_load(key, lambda: self._load_agent(request))

    async def _load_agent(self, request: pb2.GetAgentRequest) -> tuple[str, pb2.GetAgentResponse]:
        agent = await self._service.get_agent(convert.selector(request), include_code=not request.exclude_code)
        return agent.agent_id, convert.get_agent_response(agent)

    async def ListAgents(
        self, request: pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentsResponse:
        """Lists latest versions, paged, filtered and ordered."""
        page = await self._service.list_agents(convert.list_query(request))
        return convert.list_response(request, page)

    async def SearchAgents(
        self, request: pb2.SearchAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.SearchAgentsResponse:
        """Ranks agents against a plain-language query."""
        hits = await self._service.search(request.query, request.top_k, request.min_quality_score)
        return convert.search_response(hits)

    async def ListAgentVersions(
        self, request: pb2.ListAgentVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentVersionsResponse:
        """Lists one agent's versions, newest first."""
        after = convert.versions_after(request)
        page = await self._service.list_versions(convert.selector(request), request.page_size, after)
        return convert.versions_response(request, page)

    async def GetAgentLineage(
        self, request: pb2.GetAgentLineageRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentLineageResponse:
        """Returns the ancestry of one version."""
        lineage = await self._service.lineage(request.agent_id, request.version, request.max_depth)
        return convert.lineage_response(lineage)

    async def GetAgentExecutionStats(
        self, request: pb2.GetAgentExecutionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentExecutionStatsResponse:
        """One version's executions since a time."""
        stats = await self._aliases.execution_stats(request.agent_id, request.version, convert.stats_since(request))
        return convert.execution_stats_response(stats)

    async def RecordExecutions(
        self, request: pb2.RecordExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.RecordExecutionsResponse:
        """Records a batch of execution outcomes, idempotent per execution_id."""
        result = await self._service.record_executions(convert.execution_records(request))
        return convert.record_response(result)

    async def UpdateAgentLabels(
        self, request: pb2.UpdateAgentLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.UpdateAgentLabelsResponse:
        """Sets and removes labels of one version, idempotent per request_id."""
        agent = await self._service.update_labels(convert.label_update(request))
        return convert.update_labels_response(agent)

    async def ListAgentCases(
        self, request: pb2.ListAgentCasesRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentCasesResponse:
        """Lists an agent's production cases, newest first."""
        which, after = convert.cases_query(request)
        page = await self._cases.list_cases(request.agent_id, request.version, which, request.page_size, after)
        return convert.cases_response(request, page)

    async def LabelAgentCase(
        self, request: pb2.LabelAgentCaseRequest, context: grpc.aio.ServicerContext
    ) -> pb2.LabelAgentCaseResponse:
        """Labels a case with its expected output."""
        labelled = await self._cases.label(request.case_id, convert.label_expected(request))
        return pb2.LabelAgentCaseResponse(case=convert.agent_case(labelled))

    async def DeleteAgentCase(
        self, request: pb2.DeleteAgentCaseRequest, context: grpc.aio.ServicerContext
    ) -> pb2.DeleteAgentCaseResponse:
        """Deletes a case."""
        await self._cases.delete(request.case_id)
        return pb2.DeleteAgentCaseResponse()

    async def SetAgentAlias(
        self, request: pb2.SetAgentAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb2.SetAgentAliasResponse:
        """Points an alias at a version (a canary with its share and rollout policy)."""
        alias = await self._aliases.set_alias(request.agent_id, request.alias, request.version,
                                              request.traffic_fraction, convert.rollout_policy(request))
        return pb2.SetAgentAliasResponse(alias=convert.agent_alias(alias))

    async def ListAgentAliases(
        self, request: pb2.ListAgentAliasesRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentAliasesResponse:
        """An agent's aliases, latest alias events and rollout numbers."""
        return convert.aliases_response(await self._aliases.view(request.agent_id))

    async def DeleteAgentAlias(
        self, request: pb2.DeleteAgentAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb2.DeleteAgentAliasResponse:
        """Removes an alias."""
        await self._aliases.delete(request.agent_id, request.alias)
        return pb2.DeleteAgentAliasResponse()
