"""gRPC surface of the evolution service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc

from evolution_svc import convert
from evolution_svc.policy_loop import PolicyService
from evolution_svc.service import EvolutionService


class EvolutionServiceServicer(pb2_grpc.EvolutionServiceServicer):
    """Implements tdev.evolution.v1.EvolutionService."""

    def __init__(self, service: EvolutionService, policies: PolicyService) -> None:
        self._service = service
        self._policies = policies

    async def StartEvolution(
        self, request: pb2.StartEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartEvolutionResponse:
        """Answers StartEvolution."""
        run = await self._service.start(convert.start_request(request))
        return pb2.StartEvolutionResponse(run=convert.run_to_proto(run))

    async def WatchEvolution(
        self, request: pb2.WatchEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchEvolutionResponse]:
        """Streams WatchEvolution responses."""
        async for event in self._service.watch(request.run_id, request.after_sequence):
            yield pb2.WatchEvolutionResponse(event=convert.event_to_proto(event))

    async def GetEvolution(
        self, request: pb2.GetEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetEvolutionResponse:
        """Answers GetEvolution."""
        run = await self._service.get(request.run_id, include_code=not request.exclude_code)
        return pb2.GetEvolutionResponse(run=convert.run_to_proto(run))

    async def ListEvolutions(
        self, request: pb2.ListEvolutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListEvolutionsResponse:
        """Answers ListEvolutions."""
        page = await self._service.list(convert.list_query(request))
        return convert.runs_response(request, page)

    async def ListCandidates(
        self, request: pb2.ListCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListCandidatesResponse:
        """Answers ListCandidates."""
        page = await self._service.list_candidates(convert.candidate_query(request))
        return convert.candidates_response(request, page)

    async def CancelEvolution(
        self, request: pb2.CancelEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelEvolutionResponse:
        """Answers CancelEvolution."""
        run = await self._service.cancel(request.run_id, request.reason)
        return pb2.CancelEvolutionResponse(run=convert.run_to_proto(run))

    async def SetEvolutionPolicy(
        self, request: pb2.SetEvolutionPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb2.SetEvolutionPolicyResponse:
        """Answers SetEvolutionPolicy."""
        policy = await self._policies.set_policy(convert.policy_from_proto(request.policy))
        return pb2.SetEvolutionPolicyResponse(policy=convert.policy_to_proto(policy))

    async def GetEvolutionPolicy(
        self, request: pb2.GetEvolutionPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetEvolutionPolicyResponse:
        """Answers GetEvolutionPolicy."""
        policy = await self._policies.get_policy(request.agent_id)
        return pb2.GetEvolutionPolicyResponse(policy=convert.policy_to_proto(policy))

    async def ListEvolutionPolicies(
        self, request: pb2.ListEvolutionPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListEvolutionPoliciesResponse:
        """Answers ListEvolutionPolicies."""
        page = await self._policies.list_policies(*convert.policies_page(request))
        return convert.policies_response(request, page)

    async def DeleteEvolutionPolicy(
        self, request: pb2.DeleteEvolutionPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb2.DeleteEvolutionPolicyResponse:
        """Answers DeleteEvolutionPolicy."""
        await self._policies.delete_policy(request.agent_id)
        return pb2.DeleteEvolutionPolicyResponse()

    async def TriggerEvolutionPolicy(
        self, request: pb2.TriggerEvolutionPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb2.TriggerEvolutionPolicyResponse:
        """Answers TriggerEvolutionPolicy."""
        policy, run = await self._policies.trigger(request.agent_id, request.reason)
        return pb2.TriggerEvolutionPolicyResponse(policy=convert.policy_to_proto(policy),
                                                  run=convert.run_to_proto(run))
