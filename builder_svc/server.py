"""Composition root of the builder service: settings -> engine, clients, sandbox, LLM -> worker -> server."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from builder_svc.admission import Defaults
from builder_svc.clients import GrpcEvolution, GrpcRegistry, GrpcWorkflows
from builder_svc.config import SCHEMA, BuilderSettings
from builder_svc.domain import BuildEvent
from builder_svc.marking import LabelMarker
from builder_svc.pipeline import Pipeline, PipelineSettings
from builder_svc.ports import LanguageModel, Tester
from builder_svc.repository import SqlRepository
from builder_svc.service import BuilderService
from builder_svc.servicer import BuilderServiceServicer
from builder_svc.worker import BuildWorker, WorkerSettings
from tdev_common.config import CommonSettings, get_common_settings, settings_group
from tdev_common.db import create_engine, migrate
from tdev_common.event_stream import EventHub
from tdev_common.grpc_client import open_channel
from tdev_common.grpc_server import ServiceBinding, build_server
from tdev_common.runtime import ServiceHandle, load_security, on_close, serve_until_stopped, setup_process
from tdev_common.workers import worker_identity

MIGRATIONS = Path(__file__).parent / "migrations"


async def create_server(
    settings: BuilderSettings,
    common: CommonSettings,
    *,
    port: int | None = None,
    llm: LanguageModel | None = None,
    tester: Tester | None = None,
) -> ServiceHandle:
    """Builds and starts the builder service; ``port=0`` binds a free port (tests).

    The LLM client and the sandbox default to the real ones (tdev_common.llm configured from the environment,
    tdev_common.sandbox); a caller passing its own keeps ownership of it and closes it.
    """
    security = await load_security(common)
    async with contextlib.AsyncExitStack() as stack:
        database_url = settings.resolved_database_url(common, SCHEMA)
        engine = create_engine(database_url, SCHEMA)
        on_close(stack, engine.dispose)
        await migrate(engine, MIGRATIONS, SCHEMA)
        repository = SqlRepository(engine)
        registry_channel = open_channel(common.registry_address, deadline_seconds=settings.dependency_deadline_seconds,
                                        max_message_mb=common.grpc_max_message_mb, security=security.client)
        on_close(stack, registry_channel.close)
        workflow_channel = open_channel(common.workflow_address, deadline_seconds=settings.dependency_deadline_seconds,
                                        max_message_mb=common.grpc_max_message_mb, security=security.client)
        on_close(stack, workflow_channel.close)
        if tester is None:
            from builder_svc.sandbox_runner import SandboxRunner

            sandbox = await SandboxRunner.start(common)
            on_close(stack, sandbox.close)
            tester = sandbox
        if llm is None:
            from tdev_common.llm import build_llm

            client = await build_llm(common=common)
            on_close(stack, client.close)
            llm = client
        registry = GrpcRegistry(registry_channel, settings.dependency_deadline_seconds)
        evolution = None
        if settings.evolution_repair:
            evolution_channel = open_channel(common.evolution_address,
                                             deadline_seconds=settings.dependency_deadline_seconds,
                                             max_message_mb=common.grpc_max_message_mb, security=security.client)
            on_close(stack, evolution_channel.close)
            evolution = GrpcEvolution(evolution_channel, settings.dependency_deadline_seconds,
                                      settings.dependency_attempts)
        pipeline = Pipeline(
            settings_group(settings, PipelineSettings,
                           workflow_address=settings.public_workflow_address or common.workflow_address),
            llm, registry,
            GrpcWorkflows(workflow_channel, settings.dependency_deadline_seconds, settings.dependency_attempts),
            tester, repository.states, evolution)
        notifier: EventHub[BuildEvent] = EventHub(
            common.redis_url, settings.redis_channel, settings.watch_buffer_events,
            timeout_seconds=common.redis_timeout_seconds, name="builder-events")
        await notifier.start()
        on_close(stack, notifier.close)
        # A marking job is held for longer than its registry calls can take (deadline x tries, plus slack).
        marker = LabelMarker(
            repository, registry, poll_seconds=settings.claim_interval_seconds,
            hold_seconds=settings.dependency_deadline_seconds * settings.dependency_attempts + 30.0,
            max_delay_seconds=settings.label_retry_max_seconds)
        identity = worker_identity(settings.worker_id, database_url)
        worker = BuildWorker(
            settings_group(settings, WorkerSettings, worker_id=identity.name, reclaim_own=identity.reclaim_own),
            repository, pipeline, notifier, marker)
        service = BuilderService(repository, worker, notifier, settings_group(settings, Defaults),
                                 watch_poll_seconds=settings.watch_poll_seconds)
        running = await build_server(
            [
                ServiceBinding(
                    pb2.DESCRIPTOR.services_by_name["BuilderService"],
                    BuilderServiceServicer(service),
                    pb2_grpc.add_BuilderServiceServicer_to_server,
                )
            ],
            host=common.host,
            port=settings.port if port is None else port,
            max_message_mb=common.grpc_max_message_mb,
            security=security.server,
        )
        marker.start()
        on_close(stack, marker.close)
        worker.start()
        on_close(stack, worker.close)  # closed first: a run it stops may still ask the marker for a pass
        handle = ServiceHandle(running, stack.pop_all())
    return handle


async def main() -> None:
    """Runs the service until SIGTERM or Ctrl-C."""
    common = get_common_settings()
    setup_process("builder", common)
    handle = await create_server(BuilderSettings(), common)
    await serve_until_stopped(handle, common.grace_seconds)
