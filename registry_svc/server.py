"""Composition root of the registry service: settings -> engine, sandbox, LLM, cache -> servicer -> server."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from registry_svc import convert
from registry_svc.aliases import AliasService
from registry_svc.analysis import AnalysisWorker
from registry_svc.cases import CaseLimits, CaseService
from registry_svc.config import SCHEMA, RegistrySettings
from registry_svc.ports import Analyzer, CodeInspector, Embedder
from registry_svc.repository import SqlRepository
from registry_svc.response_cache import ResponseCache
from registry_svc.service import Limits, RegistryService
from registry_svc.servicer import RegistryServiceServicer
from tdev_common.clock import utc_now
from tdev_common.config import CommonSettings, get_common_settings, settings_group
from tdev_common.db import create_engine, migrate
from tdev_common.grpc_server import ServiceBinding, build_server
from tdev_common.runtime import ServiceHandle, load_security, on_close, serve_until_stopped, setup_process
from tdev_common.workers import worker_identity

MIGRATIONS = Path(__file__).parent / "migrations"


async def create_server(
    settings: RegistrySettings,
    common: CommonSettings,
    *,
    port: int | None = None,
    inspector: CodeInspector | None = None,
    analyzer: Analyzer | None = None,
    embedder: Embedder | None = None,
) -> ServiceHandle:
    """Builds and starts the registry service; ``port=0`` binds a free port (tests).

    The sandbox inspector and the LLM analyzer default to the real ones (tdev_common.sandbox, tdev_common.llm);
    tests of the service layer may pass fakes.
    """
    security = await load_security(common)
    async with contextlib.AsyncExitStack() as stack:
        database_url = settings.resolved_database_url(common, SCHEMA)
        engine = create_engine(database_url, SCHEMA)
        on_close(stack, engine.dispose)
        await migrate(engine, MIGRATIONS, SCHEMA)
        if inspector is None or analyzer is None:
            from registry_svc import adapters

            if inspector is None:
                from registry_svc.sandbox_runner import SandboxRunner

                sandbox_inspector = await SandboxRunner.start(
                    common, settings.inspect_timeout_seconds, settings.sandbox_pool_size)
                on_close(stack, sandbox_inspector.close)
                inspector = sandbox_inspector
            if analyzer is None:
                llm_analyzer = await adapters.LlmAnalyzer.open(common)
                on_close(stack, llm_analyzer.close)
                analyzer, embedder = llm_analyzer, embedder or llm_analyzer.embedder()
        repository = SqlRepository(engine)
        responses: ResponseCache[pb2.GetAgentResponse] = ResponseCache(
            parse=convert.parse_get_agent_response, serialize=convert.serialize, redis_url=common.redis_url,
            namespace=settings.cache_namespace,
            max_entries=settings.cache_max_entries, ttl_seconds=settings.cache_ttl_seconds,
            degraded_ttl_seconds=settings.cache_degraded_ttl_seconds,
            redis_timeout_seconds=common.redis_timeout_seconds, heartbeat_seconds=settings.cache_heartbeat_seconds,
        )
        await responses.start()
        on_close(stack, responses.close)
        identity = worker_identity(settings.worker_id, database_url)
        worker = AnalysisWorker(
            repository, analyzer, responses, concurrency=settings.analysis_workers,
            lease_seconds=settings.analysis_lease_seconds, timeout_seconds=settings.analysis_timeout_seconds,
            poll_seconds=settings.analysis_poll_seconds, embedder=embedder,
            owner=f"analysis-{identity.name}", reclaim_own=identity.reclaim_own,
        )
        rollouts = AliasService(repository, utc_now)
        service = RegistryService(
            repository, inspector, responses, embedder=embedder,
            limits=settings_group(settings, Limits), case_limits=settings_group(settings, CaseLimits),
            after_record=rollouts.judge,
            on_registered=worker.wake,
        )
        cases = CaseService(repository, settings_group(settings, CaseLimits), utc_now)
        running = await build_server(
            [
                ServiceBinding(
                    pb2.DESCRIPTOR.services_by_name["RegistryService"],
                    RegistryServiceServicer(service, responses, cases, rollouts),
                    pb2_grpc.add_RegistryServiceServicer_to_server,
                )
            ],
            host=common.host,
            port=settings.port if port is None else port,
            max_message_mb=common.grpc_max_message_mb,
            security=security.server,
        )
        if settings.analysis_workers > 0:
            worker.start()
            on_close(stack, worker.stop)
        handle = ServiceHandle(running, stack.pop_all())
    return handle


async def main() -> None:
    """Runs the service until SIGTERM or Ctrl-C."""
    common = get_common_settings()
    setup_process("registry", common)
    handle = await create_server(RegistrySettings(), common)
    await serve_until_stopped(handle, common.grace_seconds)
