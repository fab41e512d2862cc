"""The workflow service: DAG definitions and their executions, watched live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import grpc
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tdev_client.base import Page, ServiceClient, WatchPolicy
from tdev_client.types import Execution, ExecutionEvent, Workflow


class WorkflowClient(ServiceClient):
    """``tdev.workflow.v1.WorkflowService`` with plain values in and out."""

    def __init__(self, channel: grpc.aio.Channel, *, watch_policy: WatchPolicy | None = None) -> None:
        super().__init__(channel, pb2_grpc.WorkflowServiceStub, watch_policy=watch_policy)

    async def create_workflow(self, workflow: Mapping[str, Any], *, request_id: str = "",
                              validate_only: bool = False) -> Workflow:
        """Validates and stores a definition (``{"name", "nodes": [...], "edges": [...]}``); returns it."""
        answer = await self._call("CreateWorkflow", pb2.CreateWorkflowRequest, {
            "workflow": dict(workflow), "request_id": request_id, "validate_only": validate_only})
        return cast("Workflow", answer["workflow"])

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """One workflow definition."""
        answer = await self._call("GetWorkflow", pb2.GetWorkflowRequest, {"workflow_id": workflow_id})
        return cast("Workflow", answer["workflow"])

    async def list_workflows(self, *, page_size: int = 0, page_token: str = "",
                             name_contains: str = "") -> Page[Workflow]:
        """One page of workflows."""
        return cast("Page[Workflow]", await self._page("ListWorkflows", pb2.ListWorkflowsRequest, "workflows",
                                {"page_size": page_size, "page_token": page_token, "name_contains": name_contains}))

    def iter_workflows(self, *, name_contains: str = "") -> AsyncIterator[Workflow]:
        """Every workflow, page after page."""
        return cast("AsyncIterator[Workflow]", self._all_pages("ListWorkflows", pb2.ListWorkflowsRequest, "workflows",
                               {"name_contains": name_contains}))

    async def start_execution(self, workflow_id: str, inputs: Mapping[str, Any] | None = None, *,
                              request_id: str = "", failure_policy: str | None = None) -> Execution:
        """Starts an execution and returns it at once; follow it with :meth:`watch_execution`."""
        answer = await self._call("StartExecution", pb2.StartExecutionRequest, {
            "workflow_id": workflow_id, "inputs": dict(inputs or {}), "request_id": request_id,
            "failure_policy": failure_policy})
        return cast("Execution", answer["execution"])

    def execute_workflow(self, workflow_id: str, inputs: Mapping[str, Any] | None = None, *,
                         request_id: str = "", failure_policy: str | None = None,
                         event_types: Sequence[str] = ()) -> AsyncIterator[ExecutionEvent]:
        """Starts an execution and streams its events until it ends (one stream: if it drops, watch the
        execution by the id of the first event). ``event_types`` (names, e.g. ``"TYPE_NODE_FAILED"``) limits
        the stream to those types; the event that ends the execution always comes."""
        return cast("AsyncIterator[ExecutionEvent]", self._stream("ExecuteWorkflow", pb2.ExecuteWorkflowRequest, {
            "workflow_id": workflow_id, "inputs": dict(inputs or {}), "request_id": request_id,
            "failure_policy": failure_policy, "event_types": list(event_types), "batch_events": True}))

    def watch_execution(self, execution_id: str, *, after_sequence: int = 0,
                        event_types: Sequence[str] = ()) -> AsyncIterator[ExecutionEvent]:
        """Every event after ``after_sequence`` until the execution ends, reconnecting on its own
        (``event_types``: as for :meth:`execute_workflow`)."""
        events = self._events("WatchExecution", pb2.WatchExecutionRequest,
                              {"execution_id": execution_id, "event_types": list(event_types),
                               "batch_events": True}, after_sequence)
        return cast("AsyncIterator[ExecutionEvent]", events)

    async def get_execution(self, execution_id: str) -> Execution:
        """One execution with its node runs."""
        answer = await self._call("GetExecution", pb2.GetExecutionRequest, {"execution_id": execution_id})
        return cast("Execution", answer["execution"])

    async def list_executions(self, *, page_size: int = 0, page_token: str = "", workflow_id: str = "",
                              state: str | None = None) -> Page[Execution]:
        """One page of executions, newest first; ``state`` by name, e.g. ``"STATE_RUNNING"``."""
        return cast("Page[Execution]", await self._page("ListExecutions", pb2.ListExecutionsRequest, "executions", {
            "page_size": page_size, "page_token": page_token, "workflow_id": workflow_id, "state": state}))

    def iter_executions(self, *, workflow_id: str = "", state: str | None = None) -> AsyncIterator[Execution]:
        """Every execution, page after page."""
        executions = self._all_pages("ListExecutions", pb2.ListExecutionsRequest, "executions",
                                     {"workflow_id": workflow_id, "state": state})
        return cast("AsyncIterator[Execution]", executions)

    async def cancel_execution(self, execution_id: str, *, reason: str = "") -> Execution:
        """Asks a running execution to stop; returns it."""
        answer = await self._call("CancelExecution", pb2.CancelExecutionRequest,
                                  {"execution_id": execution_id, "reason": reason})
        return cast("Execution", answer["execution"])
