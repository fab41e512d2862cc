"""AIP-155 request ids: what a request was (its fingerprint), and the error for a request id reused otherwise."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from tdev_common.errors import FieldViolation, InvalidArgument

REQUEST_ID_FIELD = "request_id"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"


def fingerprint(request: Message, *, ignore: tuple[str, ...] = ()) -> str:
    """sha256 (hex) of the request's deterministic serialization without its ``request_id``.

    Deterministic serialization orders map entries (Struct keys, label maps), so the same request built in
    another order has the same fingerprint; a field left at its default value adds no bytes, so a field that
    a later proto adds does not change the fingerprints stored before it. Two request types with the same
    field layout (StartExecution and ExecuteWorkflow, StartBuild and BuildService) fingerprint alike, which
    lets a caller replay a request id through either of the pair. Fields named in ``ignore`` (how the
    answer is presented, not what is asked for) are left out too.
    """
    copy = type(request)()
    copy.CopyFrom(request)
    for name in (REQUEST_ID_FIELD, *ignore):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def same_request(stored: str | None, given: str) -> bool:
    """True when a stored fingerprint matches ``given``.

    Rows stored before fingerprints existed have none: they count as matching, so a replay that worked before
    the upgrade keeps working after it. An empty ``given`` (a caller inside the service that has no request
    message) matches too.
    """
    return not stored or not given or stored == given


class RequestIdReused(InvalidArgument):
    """A request id came back with a different request: the caller reused a key it must not reuse."""

    reason = REQUEST_ID_REUSED

    def __init__(self, request_id: str, what: str) -> None:
        """``what`` names the first request, e.g. 'workflow "wf_1"'."""
        problem = (f"was used before for a different request (the one that made {what}); send the same request "
                   "to replay it, or a new request id for a new request")
        super().__init__(f"request_id {request_id[:128]!r} {problem}",
                         violations=[FieldViolation(REQUEST_ID_FIELD, problem)])


def check_same_request(request_id: str, stored: str | None, given: str, what: str) -> None:
    """Raises RequestIdReused unless the stored fingerprint of ``request_id`` matches ``given``."""
    if not same_request(stored, given):
        raise RequestIdReused(request_id, what)
