"""The sandbox tier's worker: serves ``tdev.sandbox.v1`` over this host's isolated runtime.

Run it as ``python -m tdev_common.sandbox.worker``. It holds no secrets and no database or cache address: it
receives code and inputs, runs them in the local namespace backend (weak only where the settings allow
it, as for a service) and streams the outcomes back. Job code and inputs are never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
import structlog
from tdev.sandbox.v1 import sandbox_service_pb2 as pb
from tdev.sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

from tdev_common.config import CommonSettings, get_common_settings
from tdev_common.errors import DeadlineExceeded, InvalidArgument
from tdev_common.grpc_server import ServerSecurity, ServiceBinding, build_server
from tdev_common.runtime import ServiceHandle, load_server_security, on_close, serve_until_stopped, setup_process

from . import remote_wire
from .backend import Job, SandboxBackend
from .errors import SandboxError
from .namespace_backend import NamespaceBackend
from .sandbox import Sandbox
from .settings import SandboxSettings, SandboxWorkerSettings
from .weak_backend import WeakBackend

log = structlog.get_logger(__name__)

# A worker runs code on its own host: never forward to another tier.
LOCAL_BACKENDS: tuple[type[SandboxBackend], ...] = (NamespaceBackend, WeakBackend)
SERVICE = pb.DESCRIPTOR.services_by_name["SandboxService"]


class SandboxServicer(pb_grpc.SandboxServiceServicer):
    """RunJob, RunSession and GetIsolation over one local :class:`Sandbox`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def RunJob(
        self, request: pb.RunJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunJobResponse]:
        try:
            job = remote_wire.job_from_request(request)
        except remote_wire.BadJobError as error:
            raise InvalidArgument(str(error), reason="INVALID_JOB") from error
        # From here on the job may run: the client must not try it on another worker after a failure.
        await context.send_initial_metadata(((remote_wire.JOB_STARTED_KEY, remote_wire.JOB_STARTED_VALUE),))
        # The call's deadline bounds the job; grpc also cancels the handler then, which kills the processes
        # (ChildJob kills on CancelledError), but the timeout does not depend on when grpc notices.
        produced = 0
        try:
            async with (asyncio.timeout(context.time_remaining()),
                        aclosing(self._sandbox.stream_job(job.mode, job.code, job.inputs, job.limits)) as outcomes):
                async for outcome in outcomes:
                    produced += 1
                    if produced == len(job.inputs):
                        # Logged before the last answer leaves: the client stops reading once it has it, so
                        # grpc may cancel the call while this handler waits to yield, and never resume it.
                        _log_job_done(job, produced)
                    yield pb.RunJobResponse(index=produced - 1, outcome=remote_wire.outcome_message(outcome))
        except TimeoutError:
            # The caller's deadline, not a dependency down (a bare TimeoutError would map to UNAVAILABLE).
            raise DeadlineExceeded("the job did not finish within the call's deadline",
                                   reason="JOB_DEADLINE_EXCEEDED") from None
        finally:
            if produced < len(job.inputs):  # the deadline, a cancelled call or a failed runtime ended it
                _log_job_done(job, produced)

    async def RunSession(
        self, requests: AsyncIterator[pb.RunSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunSessionResponse]:
        # Calls with a stream of requests bypass the error layer: statuses are set here.
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            return
        try:
            job = remote_wire.session_from_request(first)
        except remote_wire.BadJobError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        await context.send_initial_metadata(((remote_wire.JOB_STARTED_KEY, remote_wire.JOB_STARTED_VALUE),))
        session = self._sandbox.session(job.code, job.limits)
        idle = self._sandbox.settings.session_idle_seconds
        index = 0
        batch: list[dict[str, Any]] = list(job.inputs)
        try:
            while True:
                try:
                    async for outcome in session.stream(batch):
                        yield pb.RunSessionResponse(index=index, outcome=remote_wire.outcome_message(outcome))
                        index += 1
                except SandboxError as error:  # this host's runtime failed (a status, not a traceback)
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"the sandbox worker's runtime failed: {error}")
                # Idle as long as the local session's process waits: then nothing warm is left to offer, and
                # a batch sent from now on is never read (so never run: the client may run it elsewhere).
                try:
                    async with asyncio.timeout(idle):
                        request = await anext(aiter(requests))
                except (TimeoutError, StopAsyncIteration):
                    break
                try:
                    batch = remote_wire.inputs_from(request.inputs_json)
                except remote_wire.BadJobError as error:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            session.close()
            log.debug("sandbox_session.done", inputs=index, code_chars=len(job.code))  # also if the caller left

    async def GetIsolation(
        self, request: pb.GetIsolationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetIsolationResponse:
        isolation = self._sandbox.isolation
        return pb.GetIsolationResponse(
            backend=str(isolation.get("backend", "")),
            level=str(isolation.get("level", "")),
            summary=str(isolation.get("summary", "")),
            seccomp=str(isolation.get("seccomp", "")),
        )


def _log_job_done(job: Job, produced: int) -> None:
    # Sizes and counts only: the code and the inputs are the callers' data.
    log.debug("sandbox_job.done", mode=job.mode.value, inputs=len(job.inputs), outcomes=produced,
              code_chars=len(job.code))


def local_settings(settings: SandboxSettings) -> SandboxSettings:
    """``settings`` with the remote tier switched off (a worker inherits the services' sandbox settings)."""
    backend = "auto" if settings.backend == "remote" else settings.backend
    return settings.model_copy(update={"backend": backend, "remote_addresses": ""})


async def start_worker(
    settings: SandboxSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    security: ServerSecurity | None = None,
    max_message_mb: int = 32,
) -> ServiceHandle:
    """Start the local sandbox and serve it; the handle's ``close`` drains calls, then stops the sandbox.

    Raises:
        tdev_common.sandbox.SandboxError: the sandbox cannot start here.
        OSError: the port cannot be bound.
    """
    sandbox = await Sandbox.start(local_settings(settings), backends=LOCAL_BACKENDS)
    try:
        binding = ServiceBinding(SERVICE, SandboxServicer(sandbox), pb_grpc.add_SandboxServiceServicer_to_server)
        running = await build_server(
            [binding], host=host, port=port, security=security, max_message_mb=max_message_mb
        )
    except BaseException:
        await sandbox.close()
        raise
    handle = ServiceHandle(running)
    on_close(handle.resources, sandbox.close)
    log.info("sandbox_worker.started", address=f"{host}:{running.port}", isolation=str(sandbox.isolation))
    return handle


async def _serve(common: CommonSettings) -> None:
    worker = SandboxWorkerSettings()
    if common.database_url or common.redis_url:
        # Agent code cannot read them (empty environment, no host files), but a worker has no use for them.
        log.warning("sandbox_worker.unneeded_settings", message="a sandbox worker needs no database or Redis URL")
    handle = await start_worker(
        SandboxSettings.for_mode(common.mode),
        host=worker.host,
        port=worker.port,
        security=load_server_security(common, mtls_authenticates=True),
        max_message_mb=common.grpc_max_message_mb,
    )
    await serve_until_stopped(handle, worker.grace_seconds)


def main() -> None:
    """Entry point: serve until SIGTERM/SIGINT, then drain running jobs for the grace period."""
    common = get_common_settings()
    setup_process("sandbox-worker", common)
    asyncio.run(_serve(common))


if __name__ == "__main__":
    main()
