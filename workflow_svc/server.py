"""Composition root of the workflow service: settings -> engine/clients/sandbox -> servicer -> server."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tdev_common.config import CommonSettings, get_common_settings, settings_group
from tdev_common.db import create_engine, migrate
from tdev_common.grpc_client import open_channel
from tdev_common.grpc_server import ServiceBinding, build_server
from tdev_common.runtime import ServiceHandle, load_security, on_close, serve_until_stopped, setup_process
from tdev_common.sandbox import SandboxSettings
from tdev_common.workers import worker_identity
from workflow_svc.bus import EventBus
from workflow_svc.config import SCHEMA, WorkflowSettings
from workflow_svc.engine import Engine, EngineSettings
from workflow_svc.ports import AgentRunner
from workflow_svc.registry_client import GrpcRegistry
from workflow_svc.repository import SqlRepository
from workflow_svc.sandbox_runner import SandboxRunner
from workflow_svc.service import ServiceSettings, WorkflowService
from workflow_svc.servicer import WorkflowServiceServicer
from workflow_svc.validation import Limits

MIGRATIONS = Path(__file__).parent / "migrations"


def sandbox_settings(common: CommonSettings) -> SandboxSettings:
    """Embedded mode may fall back to weak isolation (with a warning); production may not."""
    return SandboxSettings.for_mode(common.mode)


async def create_server(
    settings: WorkflowSettings,
    common: CommonSettings,
    *,
    port: int | None = None,
    runner: AgentRunner | None = None,
) -> ServiceHandle:
    """Builds and starts the workflow service; ``port=0`` binds a free port (tests).

    ``runner`` replaces the sandbox (benchmarks measuring the engine alone); agent code still never
    runs in this process, since the default is the real sandbox.
    """
    security = await load_security(common)
    async with contextlib.AsyncExitStack() as stack:
        database_url = settings.resolved_database_url(common, SCHEMA)
        database = create_engine(database_url, SCHEMA, pool_size=settings.db_pool_size)
        on_close(stack, database.dispose)
        await migrate(database, MIGRATIONS, SCHEMA)
        repo = SqlRepository(database)
        on_close(stack, repo.close)
        channel = open_channel(
            common.registry_address,
            deadline_seconds=settings.registry_deadline_seconds,
            max_message_mb=common.grpc_max_message_mb, security=security.client)
        on_close(stack, channel.close)
        registry = GrpcRegistry(channel, settings.registry_deadline_seconds)
        if runner is None:
            runner = await SandboxRunner.start(sandbox_settings(common), settings.warm_batch_size)
        on_close(stack, runner.close)
        bus = EventBus(common.redis_url, settings.redis_channel, settings.watch_buffer_events,
                       timeout_seconds=common.redis_timeout_seconds)
        await bus.start()
        on_close(stack, bus.close)
        identity = worker_identity(settings.worker_id, database_url)
        engine = Engine(
            settings_group(settings, EngineSettings, worker_id=identity.name, reclaim_own=identity.reclaim_own),
            repo,
            registry,
            runner,
            bus,
        )
        await engine.start()
        on_close(stack, engine.close)
        service = WorkflowService(
            settings_group(settings, ServiceSettings, limits=settings_group(settings, Limits)),
            repo,
            registry,
            engine,
            bus,
        )
        running = await build_server(
            [
                ServiceBinding(
                    pb2.DESCRIPTOR.services_by_name["WorkflowService"],
                    WorkflowServiceServicer(service),
                    pb2_grpc.add_WorkflowServiceServicer_to_server,
                )
            ],
            host=common.host,
            port=settings.port if port is None else port,
            max_message_mb=common.grpc_max_message_mb,
            security=security.server,
        )
        handle = ServiceHandle(running, stack.pop_all())
    return handle


async def main() -> None:
    """Runs the service until SIGTERM or Ctrl-C."""
    common = get_common_settings()
    setup_process("workflow", common)
    handle = await create_server(WorkflowSettings(), common)
    await serve_until_stopped(handle, common.grace_seconds)
