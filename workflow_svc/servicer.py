"""gRPC surface of the workflow service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from common.errors import Unimplemented


def _missing(rpc: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not built yet: the workflow service's use-cases arrive with issue #6")


class WorkflowServiceServicer(pb2_grpc.WorkflowServiceServicer):
    """Implements tdev.workflow.v1.WorkflowService."""

    async def CreateWorkflow(
        self, request: pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CreateWorkflowResponse:
        """Answers CreateWorkflow."""
        raise _missing("CreateWorkflow")

    async def GetWorkflow(
        self, request: pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetWorkflowResponse:
        """Answers GetWorkflow."""
        raise _missing("GetWorkflow")

    async def ListWorkflows(
        self, request: pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListWorkflowsResponse:
        """Answers ListWorkflows."""
        raise _missing("ListWorkflows")

    async def ExecuteWorkflow(
        self, request: pb2.ExecuteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.ExecuteWorkflowResponse]:
        """Streams ExecuteWorkflow responses."""
        raise _missing("ExecuteWorkflow")
        yield pb2.ExecuteWorkflowResponse()  # pragma: no cover - makes this an async generator

    async def StartExecution(
        self, request: pb2.StartExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartExecutionResponse:
        """Answers StartExecution."""
        raise _missing("StartExecution")

    async def WatchExecution(
        self, request: pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchExecutionResponse]:
        """Streams WatchExecution responses."""
        raise _missing("WatchExecution")
        yield pb2.WatchExecutionResponse()  # pragma: no cover - makes this an async generator

    async def GetExecution(
        self, request: pb2.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetExecutionResponse:
        """Answers GetExecution."""
        raise _missing("GetExecution")

    async def ListExecutions(
        self, request: pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListExecutionsResponse:
        """Answers ListExecutions."""
        raise _missing("ListExecutions")

    async def CancelExecution(
        self, request: pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelExecutionResponse:
        """Answers CancelExecution."""
        raise _missing("CancelExecution")
