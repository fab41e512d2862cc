"""Failed calls as exceptions: the status code, the server's message, and the details it sent
(``ErrorInfo`` reason and metadata, ``BadRequest`` field violations, the request id to quote)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One field of the request that was wrong, and why."""

    field: str
    description: str


@dataclass
class TdevError(Exception):
    """A call a service answered with an error (or one that could not reach it).

    ``reason`` is the ``ErrorInfo`` reason (``WORKFLOW_NOT_FOUND``, ``REQUEST_ID_REUSED``, ...), the thing to
    branch on; ``request_id`` is what the operator finds in the service's logs.
    """

    code: grpc.StatusCode
    message: str
    reason: str = ""
    field_violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    rpc: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def request_id(self) -> str:
        """The id the service logged this call under ("" when it never reached a service)."""
        return self.metadata.get("request_id", "")

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations:
            text += "".join(f"\n  {v.field}: {v.description}" for v in self.field_violations)
        return text


class InvalidArgument(TdevError):
    """The request is wrong; ``field_violations`` lists every problem."""


class NotFound(TdevError):
    """No such resource."""


class AlreadyExists(TdevError):
    """The resource exists already."""


class FailedPrecondition(TdevError):
    """The resource is not in a state that allows this."""


class Aborted(TdevError):
    """A concurrent change won; retry the whole operation."""


class ResourceExhausted(TdevError):
    """A budget or quota is used up."""


class Unauthenticated(TdevError):
    """No token, or one the service does not accept."""


class PermissionDenied(TdevError):
    """The token may not do this."""


class Unavailable(TdevError):
    """The service (or one it depends on) cannot answer now; safe to retry later."""


class DeadlineExceeded(TdevError):
    """No answer within the deadline."""


class Cancelled(TdevError):
    """The call was cancelled."""


class Internal(TdevError):
    """A bug on the service's side; quote ``request_id``."""


_BY_CODE: dict[grpc.StatusCode, type[TdevError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
    grpc.StatusCode.UNIMPLEMENTED: Internal,
}


def error_from_rpc(error: grpc.aio.AioRpcError, rpc: str = "") -> TdevError:
    """The exception for a failed call, with the details decoded from ``grpc-status-details-bin``."""
    code = error.code()
    reason = ""
    violations: list[FieldViolation] = []
    metadata: dict[str, str] = {}
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that contradict the status: keep the code and message
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    cls = _BY_CODE.get(code, TdevError)
    return cls(code, error.details() or "", reason, violations, metadata, rpc)
