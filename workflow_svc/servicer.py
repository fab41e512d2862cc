"""gRPC surface of the workflow service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tdev_common import idempotency
from workflow_svc import convert
from workflow_svc.service import WorkflowService


class WorkflowServiceServicer(pb2_grpc.WorkflowServiceServicer):
    """Implements tdev.workflow.v1.WorkflowService."""

    def __init__(self, service: WorkflowService) -> None:
        self._service = service

    async def CreateWorkflow(
        self, request: pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CreateWorkflowResponse:
        """Validates and stores a definition."""
        spec = convert.spec_from_proto(request.workflow)
        workflow = await self._service.create_workflow(spec, request.request_id, request.validate_only,
                                                       idempotency.fingerprint(request))
        return pb2.CreateWorkflowResponse(workflow=convert.workflow_to_proto(workflow))

    async def GetWorkflow(
        self, request: pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetWorkflowResponse:
        """Returns a workflow with its plan."""
        workflow = await self._service.get_workflow(request.workflow_id)
        return pb2.GetWorkflowResponse(workflow=convert.workflow_to_proto(workflow))

    async def ListWorkflows(
        self, request: pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListWorkflowsResponse:
        """Lists workflows, newest first."""
        size, after = convert.page_of(request)
        page = await self._service.list_workflows(size, after, request.name_contains)
        return convert.workflows_response(request, page)

    async def ExecuteWorkflow(
        self, request: pb2.ExecuteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.ExecuteWorkflowResponse]:
        """Starts an execution and streams its events."""
        types = convert.event_types(request.event_types)  # checked before anything is started
        batches = self._service.execute(convert.start_request(request), types)
        responses = convert.event_responses(batches, pb2.ExecuteWorkflowResponse, batched=request.batch_events)
        async for response in responses:
            yield response

    async def StartExecution(
        self, request: pb2.StartExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartExecutionResponse:
        """Starts an execution and returns at once."""
        execution = await self._service.start_execution(convert.start_request(request))
        return pb2.StartExecutionResponse(execution=convert.execution_to_proto(execution))

    async def WatchExecution(
        self, request: pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchExecutionResponse]:
        """Streams events after a sequence number."""
        types = convert.event_types(request.event_types)
        batches = self._service.watch(request.execution_id, request.after_sequence, types)
        responses = convert.event_responses(batches, pb2.WatchExecutionResponse, batched=request.batch_events)
        async for response in responses:
            yield response

    async def GetExecution(
        self, request: pb2.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetExecutionResponse:
        """Returns an execution with per-node state."""
        execution = await self._service.get_execution(request.execution_id)
        return pb2.GetExecutionResponse(execution=convert.execution_to_proto(execution))

    async def ListExecutions(
        self, request: pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListExecutionsResponse:
        """Lists executions, newest first."""
        size, after = convert.page_of(request)
        page = await self._service.list_executions(convert.execution_filter(request), size, after)
        return convert.executions_response(request, page)

    async def CancelExecution(
        self, request: pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelExecutionResponse:
        """Cancels a running execution."""
        execution = await self._service.cancel(request.execution_id, request.reason)
        return pb2.CancelExecutionResponse(execution=convert.execution_to_proto(execution))
