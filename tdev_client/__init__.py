"""The typed async Python client of T-Developer: one client per service, plain values in and out, failures as
:class:`TdevError` (status code, reason, field violations, request id), watches that resume on their own.

    from tdev_client import Connection, Mesh

    async with Mesh(Connection.resolve(profile="prod")) as mesh:
        workflow = await mesh.workflows.create_workflow({"name": "hello", "nodes": [...]})
        execution = await mesh.workflows.start_execution(workflow["workflow_id"], {"text": "hi"})
        async for event in mesh.workflows.watch_execution(execution["execution_id"]):
            print(event["type"])
"""

from tdev_client.base import Page, WatchPolicy
from tdev_client.builds import BuilderClient
from tdev_client.connection import SERVICES, Connection, ConnectionError_
from tdev_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TdevError,
    Unauthenticated,
    Unavailable,
)
from tdev_client.evolution import EvolutionClient
from tdev_client.mesh import Mesh
from tdev_client.registry import RegistryClient
from tdev_client.workflows import WorkflowClient

__all__ = [
    "SERVICES", "Aborted", "AlreadyExists", "BuilderClient", "Cancelled", "Connection", "ConnectionError_",
    "DeadlineExceeded", "EvolutionClient", "FailedPrecondition", "FieldViolation", "Internal", "InvalidArgument",
    "Mesh", "NotFound", "Page", "PermissionDenied", "RegistryClient", "ResourceExhausted", "TdevError",
    "Unauthenticated", "Unavailable", "WatchPolicy", "WorkflowClient",
]
