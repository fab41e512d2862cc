"""A session on the sandbox tier: one ``RunSession`` call to one worker, whose warm process serves the batches.

The worker holds the process (tdev_common.sandbox.worker); this side checks its answers like a job's and
tells apart how a call ended: with OK while a batch is unanswered, the worker had ended the idle session
before reading the batch, so it never ran and goes to a fresh session; with any other status, the inputs
without an outcome may have run and come back ``killed`` (the caller's retry policy decides).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import grpc
import structlog
from tdev.sandbox.v1 import sandbox_service_pb2 as pb
from tdev.sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

from . import remote_wire
from .backend import Job, SessionCounts
from .errors import SandboxError, SandboxUnavailableError
from .outcome import Outcome, OutcomeKind

log = structlog.get_logger(__name__)

# Codes that mean this client or its configuration is wrong: another worker would answer the same.
CONFIG_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
)
# Beyond an input's own deadline, which the worker enforces: time for the call itself.
CALL_SLACK_SECONDS = 2.0


class RemoteSession(SessionCounts):
    """The client's side of one RunSession call (the worker is chosen at the first batch)."""

    def __init__(
        self, stubs: Sequence[pb_grpc.SandboxServiceStub], addresses: Sequence[str], first_worker: int, job: Job,
        *, grace: float, max_inputs: int,
    ) -> None:
        super().__init__(max_inputs)
        self._stubs = stubs
        self._addresses = addresses
        self._first_worker = first_worker
        self._job = job
        self._grace = grace
        self._call: Any = None
        self._address = ""

    async def run(self, inputs: list[dict[str, Any]]) -> AsyncGenerator[Outcome, None]:
        """Yield one outcome per input, in order; it stops early (possibly with none) only when the worker had
        ended the session before reading the batch, which therefore never ran.

        Raises:
            ValueError: an input is not JSON-serialisable (nothing was sent).
            SandboxUnavailableError: no worker could take the session's first batch.
            SandboxError: a worker refused it (configuration: token, limits).
        """
        self.admit(inputs)
        try:
            request = remote_wire.session_request(dataclasses.replace(self._job, inputs=inputs),
                                                  first=self._call is None)
        except ValueError:
            if self._call is None:
                self.close()
            raise
        self.sent += len(inputs)
        taken = 0
        try:
            if self._call is None:
                await self._open(request)
            elif not await self._write(request):  # the call had ended (idle) before this batch: none of it ran
                self.sent -= len(inputs)
                self.close()
                return
            per_input = self._job.limits.timeout_seconds + self._grace + CALL_SLACK_SECONDS
            while taken < len(inputs):
                try:
                    async with asyncio.timeout(per_input):
                        response = await self._call.read()
                except TimeoutError:
                    self.close()
                    for outcome in self._rest(len(inputs) - taken, OutcomeKind.TIMEOUT,
                                              f"the sandbox worker at {self._address} did not answer within "
                                              f"{per_input:g}s"):
                        taken += 1
                        yield outcome
                    return
                except grpc.aio.AioRpcError as error:
                    response = grpc.aio.EOF
                    status: tuple[grpc.StatusCode, str] | None = (error.code(), error.details() or "")
                else:
                    status = None
                if response is grpc.aio.EOF:
                    status = status or await self._status()
                    for outcome in self._after_end(status, len(inputs) - taken):
                        taken += 1
                        yield outcome
                    return
                if response.index != self.answered:
                    self.close()
                    for outcome in self._rest(len(inputs) - taken, OutcomeKind.INVALID_OUTPUT,
                                              f"the sandbox worker at {self._address} broke the answer order"):
                        taken += 1
                        yield outcome
                    return
                self.answered += 1
                taken += 1
                yield remote_wire.outcome_from_message(response.outcome, self._job.limits.max_output_bytes)
            if self.answered >= self.max_inputs:
                self.close()
        except BaseException:
            if taken < len(inputs):  # abandoned or failed mid-batch: the worker must not run on for nobody
                self.close()
            raise

    def close(self) -> None:
        """End the session: the call is cancelled, and the worker kills its process. Idempotent."""
        if self._call is not None:
            self._call.cancel()
        if not self.ended.done():
            self.ended.set_result(None)

    # -- the call ----------------------------------------------------------------------------------------
    async def _open(self, request: pb.RunSessionRequest) -> None:
        """Start the call on the first worker that accepts the session (one that is unreachable before it
        accepted certainly ran nothing, so the next is tried)."""
        refused: list[str] = []
        for step in range(len(self._stubs)):
            index = (self._first_worker + step) % len(self._stubs)
            address = self._addresses[index]
            call = self._stubs[index].RunSession()
            written = await self._write(request, call)
            metadata = await call.initial_metadata() if written else None
            if metadata is not None and any(key == remote_wire.JOB_STARTED_KEY for key, _ in metadata):
                self._call, self._address = call, address
                call.add_done_callback(lambda _: self.close())
                return
            code, details = await self._status(call)
            reason = f"{address}: {code.name} {details}".strip()
            if code in CONFIG_CODES:
                self.close()
                raise SandboxError(f"the sandbox worker refused the session ({reason})")
            refused.append(reason)
            log.warning("sandbox.remote_worker_unavailable", worker=address, details=details)
        self.close()
        raise SandboxUnavailableError("no sandbox worker could take the session: " + "; ".join(refused))

    async def _write(self, request: pb.RunSessionRequest, call: Any = None) -> bool:
        try:
            await (call or self._call).write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return False
        return True

    async def _status(self, call: Any = None) -> tuple[grpc.StatusCode, str]:
        call = call or self._call
        return await call.code(), await call.details() or ""

    def _after_end(self, status: tuple[grpc.StatusCode, str], missing: int) -> list[Outcome]:
        """Outcomes for the ``missing`` inputs of a batch whose call ended: none when it ended OK (the worker
        had ended the idle session before reading the batch: it never ran); else they may have run."""
        self.close()
        code, details = status
        if code is grpc.StatusCode.OK:
            self.sent -= missing
            return []
        if code in CONFIG_CODES:
            raise SandboxError(f"the sandbox worker at {self._address} refused the batch ({code.name} {details})")
        log.warning("sandbox.remote_worker_lost", worker=self._address, code=code.name, missing=missing)
        return self._rest(missing, OutcomeKind.KILLED,
                          f"the sandbox worker at {self._address} was lost during the session ({code.name})")

    def _rest(self, missing: int, kind: OutcomeKind, detail: str) -> list[Outcome]:
        self.answered += missing
        return [Outcome(kind=kind, detail=detail)] * missing
