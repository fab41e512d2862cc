"""Domain errors, and the one place that maps them (and everything else) to gRPC status codes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tdev_common.handler_layers import rewrap
from tdev_common.telemetry import bind_call, unbind_call

DOMAIN = "tdev.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one field of a request, e.g. ``nodes[3].depends_on``: unknown node "x"."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a use-case raises on purpose; carries a status code and a clear message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status with ErrorInfo (and BadRequest when there are field violations)."""
        details = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            packed_bad = any_pb2.Any()
            packed_bad.Pack(bad)
            details.append(packed_bad)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


class InvalidArgument(DomainError):
    """The request is malformed; the message says what and where."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict; retrying the whole operation may succeed."""

    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class ResourceExhausted(DomainError):
    """A limit or budget is used up."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency (database, another service, a provider) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    """The work did not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unimplemented(DomainError):
    """The RPC exists in the contract but its feature is not built yet; never a fake success."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Cancelled(DomainError):
    """The operation was cancelled."""

    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


# Reasons shared by every service for field-level problems. Everything else names its own reason at the raise
# site (WORKFLOW_NOT_FOUND, REQUEST_ID_REUSED, ...): callers branch on ErrorInfo.reason, so it must say what
# went wrong; the class-level reasons above (the code's name) are only a fallback for errors from elsewhere.
INVALID_FIELD = "INVALID_FIELD"
FIELD_REQUIRED = "FIELD_REQUIRED"


def invalid_field(field: str, problem: str, *, reason: str = INVALID_FIELD) -> InvalidArgument:
    """An INVALID_ARGUMENT naming one field, with it as the BadRequest field violation."""
    return InvalidArgument(f"{field}: {problem}", reason=reason, violations=[FieldViolation(field, problem)])


def invalid_fields(violations: Sequence[FieldViolation], *, reason: str = INVALID_FIELD) -> InvalidArgument:
    """An INVALID_ARGUMENT listing every problem found (the message names the first and counts the rest)."""
    if not violations:
        raise ValueError("invalid_fields needs at least one violation")
    first = violations[0]
    more = f" (and {len(violations) - 1} more problems)" if len(violations) > 1 else ""
    return InvalidArgument(f"{first.field}: {first.description}{more}", reason=reason, violations=violations)


def require(field: str, value: str) -> None:
    """Raises INVALID_ARGUMENT (reason FIELD_REQUIRED, a violation on ``field``) for an empty required value.

    A required id left empty is a malformed request, never a lookup of a resource called "".
    """
    if not value:
        raise invalid_field(field, "is required", reason=FIELD_REQUIRED)


_CODE_TO_ERROR: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        Cancelled,
    )
}


def from_rpc_error(error: grpc.RpcError, *, context: str) -> DomainError:
    """Turns a failed call to another service into the DomainError a caller of ours should see.

    A dependency that is down becomes UNAVAILABLE naming it; its own domain errors keep their code.
    """
    code = error.code() if isinstance(error, grpc.aio.AioRpcError | grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.aio.AioRpcError | grpc.Call) else str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{context}: dependency unavailable ({code.name}): {details}",
                           reason="DEPENDENCY_UNAVAILABLE")
    cls = _CODE_TO_ERROR.get(code, DomainError)
    reason, violations = _details_of(error)
    return cls(f"{context}: {details}", reason=reason, violations=violations)


def _details_of(error: grpc.RpcError) -> tuple[str | None, list[FieldViolation]]:
    """The ErrorInfo reason and BadRequest violations a dependency answered with, so they reach our caller."""
    if not isinstance(error, grpc.aio.AioRpcError | grpc.Call):
        return None, []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # a status that contradicts its details: keep the code, drop the details
        return None, []
    if status is None:
        return None, []
    reason: str | None = None
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return reason, violations


def translate(error: BaseException) -> DomainError | None:
    """Maps infrastructure exceptions with a known meaning (database down) to domain errors."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        # A call to another service failed and the caller did not say which: keep its meaning.
        return from_rpc_error(error, context="a dependency call failed")
    if isinstance(error, ConnectionError | TimeoutError):
        return Unavailable("a dependency is unavailable; retry later", reason="DEPENDENCY_UNAVAILABLE")
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a runtime dependency
        return None
    if isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated
        or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
        or is_transient_sqlstate(_sqlstate(error))
    ):
        return Unavailable("database unavailable; retry later", reason="DATABASE_UNAVAILABLE")
    if isinstance(error, sa_exc.TimeoutError):  # the connection pool had nothing free in time
        return Unavailable("database busy; retry later", reason="DATABASE_UNAVAILABLE")
    if isinstance(error, OSError):
        return Unavailable("a dependency is unavailable; retry later", reason="DEPENDENCY_UNAVAILABLE")
    return None


# SQLSTATE classes and codes that mean "the database cannot serve this right now" rather than "this request is
# wrong": connection exceptions (08), insufficient resources (53: too many clients, disk full), operator
# intervention (57: admin/crash shutdown, cannot connect now, query cancelled), system errors (58), a
# serialization failure or deadlock (40001, 40P01), a lock not available (55P03), and a read-only transaction
# (25006, what a writer demoted during an RDS failover answers). Each is worth retrying later.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "25006"})


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    """True for a Postgres SQLSTATE that means the database is (briefly) unable to serve, not a bad request."""
    if not sqlstate:
        return False
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


def _sqlstate(error: BaseException) -> str | None:
    # SQLAlchemy's asyncpg adapter copies the server's SQLSTATE onto the wrapped driver error.
    orig = getattr(error, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), error):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_cancellation(error: BaseException) -> bool:
    """True for the exceptions that mean "the call is over", which must propagate untouched.

    GeneratorExit is how a streaming handler learns that its caller went away while it waited to yield (grpc
    closes the response generator): a caller that stops reading after the answers it needs is not an error.
    """
    return isinstance(error, asyncio.CancelledError | grpc.aio.AbortError | GeneratorExit)


log = structlog.get_logger("tdev.rpc")
REQUEST_ID_KEY = "x-request-id"


# Process-unique ids from a random prefix and a counter: as unique as uuid4 in practice, ~20x cheaper.
_ID_PREFIX = uuid.uuid4().hex[:8]
_id_counter = itertools.count(1)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value[:128]
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def error_layer(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """Binds a request id to the logs of each call and maps every exception to a status (a handler layer).

    DomainError -> its code with ErrorInfo/BadRequest details; infrastructure errors with a known
    meaning -> UNAVAILABLE; anything else -> INTERNAL with a generic message, the traceback logged.
    Requests that do not decode are answered INVALID_ARGUMENT, not with grpc's bare INTERNAL. Calls with
    a stream of requests (reflection) pass through untouched.
    """
    if handler.request_streaming:
        return handler

    def wrap(behaviour: Callable[..., Any], response_streaming: bool) -> Callable[..., Any]:
        return _wrap_stream(behaviour, method) if response_streaming else _wrap_unary(behaviour, method)

    return rewrap(handler, wrap, _tolerant(handler.request_deserializer))


def _wrap_unary(behaviour: Callable[..., Awaitable[object]], method: str) -> Callable[..., object]:
    async def unary(request: object, context: grpc.aio.ServicerContext) -> object:
        request_id = _request_id(context)
        started = time.perf_counter()
        labels = bind_call(request_id, method)
        try:
            _admit(request, method)
            return await behaviour(request, context)
        except BaseException as error:
            await _abort(error, context, method, request_id, started)
            raise
        finally:
            unbind_call(labels)

    return unary


def _wrap_stream(behaviour: Callable[..., object], method: str) -> Callable[..., object]:
    async def stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        request_id = _request_id(context)
        started = time.perf_counter()
        labels = bind_call(request_id, method)
        try:
            _admit(request, method)
            result = behaviour(request, context)
            if isinstance(result, AsyncGenerator):
                # Closed with this wrapper when the caller leaves, so the handler's own cleanup runs now.
                async with contextlib.aclosing(result):
                    async for item in result:
                        yield item
            elif hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result  # type: ignore[misc]
        except BaseException as error:
            await _abort(error, context, method, request_id, started)
            raise
        finally:
            unbind_call(labels)

    return stream


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request whose bytes did not decode, so the handler wrapper can answer INVALID_ARGUMENT
    (grpc itself answers a deserializer's exception with UNKNOWN "Unexpected DecodeError")."""

    problem: str


def _tolerant(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception as error:
            return _Undecodable(str(error) or type(error).__name__)

    return deserialize


def _admit(request: object, method: str) -> None:
    """Rejects undecodable requests and those breaking the rules every RPC shares (tdev_common.request_guard)."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request to {method} could not be decoded ({request.problem}): every string must be valid "
            "UTF-8, Structs may nest at most 32 levels, and the message must be complete and match the "
            "service's current protos",
            reason="UNDECODABLE_REQUEST",
            # No field can be named in bytes that did not decode: the violation is on the request as a whole.
            violations=[FieldViolation("request", f"could not be decoded ({request.problem})")],
        )
    request_guard.check_request(request)  # type: ignore[arg-type]


# Bounds on what an error carries back, so echoed values never overflow a caller's metadata limit (8 KiB).
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 300


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def _bound_error(error: DomainError) -> None:
    error.message = _bounded(error.message, MAX_MESSAGE_CHARS)
    error.violations = tuple(
        FieldViolation(field=_bounded(v.field, MAX_DETAIL_CHARS), description=_bounded(v.description, MAX_DETAIL_CHARS))
        for v in error.violations[:50]
    )
    error.metadata = {
        _bounded(key, 64): _bounded(value, MAX_DETAIL_CHARS) for key, value in list(error.metadata.items())[:20]
    }


async def _abort(
    error: BaseException, context: grpc.aio.ServicerContext, method: str, request_id: str, started: float
) -> None:
    if is_cancellation(error):
        return
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    domain = translate(error)
    if domain is None:
        log.error("rpc_internal_error", method=method, elapsed_ms=elapsed_ms, exc_info=error)
        domain = DomainError(f"internal error; quote request id {request_id} to the operator")
    else:
        _bound_error(domain)
        log.info(
            "rpc_failed", method=method, code=domain.code.name, message=domain.message, elapsed_ms=elapsed_ms
        )
    domain.metadata.setdefault("request_id", request_id)
    status = rpc_status.to_status(domain.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


# At the end: request_guard builds on the error types above (an import cycle that attribute access resolves).
from tdev_common import request_guard  # noqa: E402
