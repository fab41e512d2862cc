"""The remote backend: agent code runs on a pool of sandbox tier workers (``tdev.sandbox.v1`` over gRPC).

Sessions (warm reuse) are one ``RunSession`` call each (tdev_common.sandbox.remote_session).

For hosts that cannot create namespaces (ECS Fargate): the workers run the namespace backend on hosts that
can. Jobs go round-robin over the workers. A job is tried on the next worker only while it certainly has not
started (UNAVAILABLE before the worker accepted it); once it may have run, it never runs again elsewhere:
the inputs without an outcome come back ``killed`` and the caller's retry policy decides.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, ClassVar

import grpc
import structlog
from tdev.sandbox.v1 import sandbox_service_pb2 as pb
from tdev.sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

from tdev_common.grpc_client import ClientSecurity, open_channel

from . import remote_wire
from .backend import IsolationLevel, Job, Probe, SandboxBackend
from .errors import SandboxClosedError, SandboxError, SandboxUnavailableError
from .outcome import Outcome, OutcomeKind
from .remote_session import CALL_SLACK_SECONDS, CONFIG_CODES, RemoteSession
from .settings import SandboxSettings

log = structlog.get_logger(__name__)



class RemoteBackend(SandboxBackend):
    """Runs each job on one worker of the sandbox tier (``TDEV_SANDBOX_REMOTE_ADDRESSES``)."""

    name: ClassVar[str] = "remote"
    level: ClassVar[IsolationLevel] = IsolationLevel.REMOTE

    def __init__(self, settings: SandboxSettings, security: ClientSecurity | None = None) -> None:
        super().__init__(settings)
        self.addresses = settings.remote_worker_addresses
        self._security = security
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pb_grpc.SandboxServiceStub] = []
        self._turn = itertools.count()
        self._tier: dict[str, str] = {}
        self._closed = False
        self._finishing: set[Any] = set()

    @classmethod
    def probe(cls, settings: SandboxSettings) -> Probe:
        # Configured is enough: an unreachable tier must fail calls as UNAVAILABLE, never make the service
        # fall back to running agent code on its own host.
        if settings.remote_worker_addresses:
            return Probe(True)
        return Probe(False, "no sandbox tier configured (TDEV_SANDBOX_REMOTE_ADDRESSES)")

    async def start(self) -> None:
        if not self.addresses:
            raise SandboxError("no sandbox tier configured (TDEV_SANDBOX_REMOTE_ADDRESSES)")
        security = self._security or await _mesh_client_security()
        # retries=False: failover is decided here, by whether the job had started (see the module docstring).
        self._channels = [open_channel(address, retries=False, security=security) for address in self.addresses]
        self._stubs = [pb_grpc.SandboxServiceStub(channel) for channel in self._channels]
        answers = await asyncio.gather(*(self._isolation_of(i) for i in range(len(self._stubs))))
        reachable = [answer for answer in answers if answer is not None]
        if reachable:
            self._tier = reachable[0]
        unreachable = [address for address, answer in zip(self.addresses, answers, strict=True) if answer is None]
        if unreachable:
            # Not fatal: the tier may come up after the service; until then calls fail as UNAVAILABLE.
            log.warning("sandbox.remote_workers_unreachable", workers=unreachable, total=len(self.addresses))

    async def _isolation_of(self, index: int) -> dict[str, str] | None:
        try:
            answer = await self._stubs[index].GetIsolation(
                pb.GetIsolationRequest(), timeout=self.settings.remote_connect_timeout_seconds, wait_for_ready=True
            )
        except grpc.aio.AioRpcError:
            return None
        return {"backend": answer.backend, "level": answer.level, "summary": answer.summary,
                "seccomp": answer.seccomp}

    async def open_session(self, job: Job, *, idle_seconds: float, max_inputs: int) -> RemoteSession:
        """A session on one worker (chosen round-robin at its first batch); the worker's own idle time ends it."""
        if self._closed or not self._stubs:
            raise SandboxClosedError("the sandbox is closed")
        return RemoteSession(self._stubs, self.addresses, next(self._turn), job, grace=self.settings.grace_seconds,
                             max_inputs=max_inputs)

    async def execute(self, job: Job) -> list[Outcome]:
        if self._closed or not self._stubs:
            raise SandboxClosedError("the sandbox is closed")
        request = remote_wire.job_request(job)
        timeout = job.limits.timeout_seconds * (len(job.inputs) + 1) + self.settings.grace_seconds + CALL_SLACK_SECONDS
        first = next(self._turn)
        refused: list[str] = []
        for step in range(len(self._stubs)):
            index = (first + step) % len(self._stubs)
            outcomes = await self._run_on(index, request, job, timeout, refused)
            if outcomes is not None:
                return outcomes
        raise SandboxUnavailableError("no sandbox worker could take the job: " + "; ".join(refused))

    async def _run_on(
        self, index: int, request: pb.RunJobRequest, job: Job, timeout: float, refused: list[str]
    ) -> list[Outcome] | None:
        """The job's outcomes from worker ``index``, or None (reason added to ``refused``) when the worker
        was unreachable before it accepted the job."""
        address = self.addresses[index]
        call = self._stubs[index].RunJob(request, timeout=timeout)
        outcomes: list[Outcome] = []
        started = False
        try:
            metadata = await call.initial_metadata()
            started = any(key == remote_wire.JOB_STARTED_KEY for key, _ in metadata or ())
            async for response in call:
                started = True
                if response.index != len(outcomes) or len(outcomes) >= len(job.inputs):
                    call.cancel()
                    return self._rest(outcomes, job, OutcomeKind.INVALID_OUTPUT,
                                      f"the sandbox worker at {address} broke the answer order")
                outcomes.append(remote_wire.outcome_from_message(response.outcome, job.limits.max_output_bytes))
                if len(outcomes) == len(job.inputs):
                    # Every answer is in: the status that follows can only be OK, so it is not waited for.
                    # The call is kept until it ends (dropping it would cancel it).
                    self._finishing.add(call)
                    call.add_done_callback(self._finishing.discard)
                    return outcomes
        except asyncio.CancelledError:
            call.cancel()  # the worker sees the cancellation and kills the job's processes
            raise
        except grpc.aio.AioRpcError as error:
            code = error.code()
            reason = f"{address}: {code.name} {error.details() or ''}".strip()
            if code is grpc.StatusCode.UNAVAILABLE and not started:
                refused.append(reason)
                log.warning("sandbox.remote_worker_unavailable", worker=address, details=error.details())
                return None
            if code in CONFIG_CODES:
                raise SandboxError(f"the sandbox worker refused the job ({reason})") from error
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return self._rest(outcomes, job, OutcomeKind.TIMEOUT,
                                  f"the sandbox worker at {address} did not finish within {timeout:g}s")
            log.warning("sandbox.remote_worker_lost", worker=address, code=code.name, answered=len(outcomes))
            return self._rest(outcomes, job, OutcomeKind.KILLED,
                              f"the sandbox worker at {address} was lost during the job ({code.name})")
        if len(outcomes) < len(job.inputs):
            return self._rest(outcomes, job, OutcomeKind.KILLED,
                              f"the sandbox worker at {address} ended the job early")
        return outcomes

    @staticmethod
    def _rest(outcomes: list[Outcome], job: Job, kind: OutcomeKind, detail: str) -> list[Outcome]:
        """Every input without an outcome gets ``kind``: it may have run, so it is not run again here."""
        return outcomes + [Outcome(kind=kind, detail=detail)] * (len(job.inputs) - len(outcomes))

    async def close(self) -> None:
        self._closed = True
        channels, self._channels, self._stubs = self._channels, [], []
        await asyncio.gather(*(channel.close() for channel in channels))

    def describe(self) -> dict[str, Any]:
        tier = self._tier
        summary = f"sandbox tier of {len(self.addresses)} worker(s) over gRPC"
        summary += f"; workers: {tier['level']}: {tier['summary']}" if tier else "; workers not reached yet"
        return {
            "backend": self.name,
            "level": self.level.value,
            "summary": summary,
            "workers": list(self.addresses),
            "worker_isolation": dict(tier),
            "seccomp": tier.get("seccomp", "unknown (workers not reached)"),
        }


async def _mesh_client_security() -> ClientSecurity:
    """What every channel of this service presents (token, CA): the tier is called like any service."""
    from tdev_common.config import get_common_settings
    from tdev_common.runtime import load_security

    return (await load_security(get_common_settings())).client
