"""Composition root of the evolution service: settings -> engine, sandbox, LLM, registry, cache -> servicer."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc

from evolution_svc.config import SCHEMA, EvolutionSettings
from evolution_svc.controller import EngineSettings
from evolution_svc.domain import Event, EvolutionConfig, OperatorSet, Selection
from evolution_svc.executor import ExecutorSettings, ModelFactory, RunExecutor
from evolution_svc.fitness_cache import SignedMeasurementCache
from evolution_svc.llm_client import LlmModelClient
from evolution_svc.policy_loop import PolicyLoop, PolicyService, PolicySettings
from evolution_svc.ports import CandidateRunner, ProductionRegistry
from evolution_svc.registry_client import GrpcRegistry
from evolution_svc.repository import SqlRunRepository
from evolution_svc.sandbox_runner import SandboxRunner
from evolution_svc.service import EvolutionService
from evolution_svc.servicer import EvolutionServiceServicer
from tdev_common.cache import build_cache
from tdev_common.config import CommonSettings, get_common_settings, settings_group
from tdev_common.db import create_engine, migrate
from tdev_common.event_stream import EventHub
from tdev_common.grpc_client import open_channel
from tdev_common.grpc_server import ServiceBinding, build_server
from tdev_common.llm import Budget, build_llm
from tdev_common.runtime import ServiceHandle, load_security, on_close, serve_until_stopped, setup_process
from tdev_common.sandbox import Limits, Sandbox, SandboxSettings
from tdev_common.workers import worker_identity

MIGRATIONS = Path(__file__).parent / "migrations"
MIB = 1024 * 1024


def run_defaults(settings: EvolutionSettings) -> EvolutionConfig:
    """What a run gets for every setting its request leaves unset."""
    operators = {
        "auto": OperatorSet.UNSPECIFIED,
        "program_transform": OperatorSet.PROGRAM_TRANSFORM,
        "llm": OperatorSet.LLM,
        "mixed": OperatorSet.MIXED,
    }[settings.operators]
    return EvolutionConfig(
        population_size=settings.population_size,
        generations=settings.generations,
        mutation_rate=settings.mutation_rate,
        crossover_rate=settings.crossover_rate,
        elitism=settings.elitism,
        tournament_size=settings.tournament_size,
        islands=settings.islands,
        migration_interval=settings.migration_interval,
        migration_size=settings.migration_size,
        operators=operators,
        max_evaluations=settings.max_evaluations,
        max_cost_usd=settings.max_cost_usd,
        max_duration_seconds=settings.max_duration_seconds,
        plateau_generations=settings.plateau_generations,
        promotion_margin=settings.promotion_margin,
        speed_weight=settings.speed_weight,
        size_weight=settings.size_weight,
        promote=settings.promote,
        selection=Selection(settings.selection),
        synthesis=settings.synthesis,
    )


async def create_server(
    settings: EvolutionSettings,
    common: CommonSettings,
    *,
    port: int | None = None,
    runner: CandidateRunner | None = None,
    registry: ProductionRegistry | None = None,
    model_factory: ModelFactory | None = None,
) -> ServiceHandle:
    """Builds and starts the evolution service; ``port=0`` binds a free port (tests).

    The sandbox, the registry client and the LLM layer default to the real ones; tests may pass their own
    (a priced model to exercise the cost budget, for example).
    """
    security = await load_security(common)
    async with contextlib.AsyncExitStack() as stack:
        database_url = settings.resolved_database_url(common, SCHEMA)
        engine = create_engine(database_url, SCHEMA)
        on_close(stack, engine.dispose)
        await migrate(engine, MIGRATIONS, SCHEMA)
        if runner is None:
            sandbox = await Sandbox.start(SandboxSettings.for_mode(common.mode))
            on_close(stack, sandbox.close)
            limits = Limits(
                timeout_seconds=settings.case_timeout_seconds,
                cpu_seconds=settings.case_timeout_seconds,
                memory_bytes=settings.case_memory_mb * MIB,
            )
            runner = SandboxRunner(sandbox, limits)
        if registry is None:
            channel = open_channel(
                common.registry_address,
                deadline_seconds=settings.registry_deadline_seconds,
                max_message_mb=common.grpc_max_message_mb, security=security.client)
            on_close(stack, channel.close)
            registry = GrpcRegistry(channel, settings.registry_deadline_seconds)
        model_available = False
        if model_factory is None:
            llm = await build_llm(common=common)
            on_close(stack, llm.close)
            model_available = bool(llm.real_providers())

            def model_factory(run_id: str, max_cost_usd: float) -> LlmModelClient:
                return LlmModelClient(llm, Budget(f"evolution {run_id}", max_cost_usd=max_cost_usd))

        else:
            model_available = True
        cache = build_cache(common.redis_url, settings.cache_namespace,
                            timeout_seconds=common.redis_timeout_seconds)
        on_close(stack, cache.close)
        signing_key = settings.cache_signing_key.get_secret_value().encode() if settings.cache_signing_key else None
        notifier: EventHub[Event] = EventHub(
            common.redis_url, settings.redis_channel, settings.watch_buffer_events,
            timeout_seconds=common.redis_timeout_seconds, name="evolution-events")
        await notifier.start()
        on_close(stack, notifier.close)
        identity = worker_identity(settings.worker_id, database_url)
        executor = RunExecutor(
            SqlRunRepository(engine),
            registry,
            runner,
            notifier,
            owner=identity.name,
            reclaim_own=identity.reclaim_own,
            cache=SignedMeasurementCache(cache, signing_key, settings.cache_ttl_seconds),
            model_factory=model_factory,
            settings=settings_group(settings, ExecutorSettings, engine=settings_group(settings, EngineSettings)),
        )
        service = EvolutionService(
            SqlRunRepository(engine),
            registry,
            executor,
            notifier,
            run_defaults(settings),
            model_available=model_available,
            watch_poll_seconds=settings.watch_poll_seconds,
        )
        policy_service = PolicyService(SqlRunRepository(engine), registry, service, owner=identity.name,
                                       settings=settings_group(settings, PolicySettings))
        policy_loop = PolicyLoop(policy_service, settings.policy_interval_seconds)
        running = await build_server(
            [
                ServiceBinding(
                    pb2.DESCRIPTOR.services_by_name["EvolutionService"],
                    EvolutionServiceServicer(service, policy_service),
                    pb2_grpc.add_EvolutionServiceServicer_to_server,
                )
            ],
            host=common.host,
            port=settings.port if port is None else port,
            max_message_mb=common.grpc_max_message_mb,
            security=security.server,
        )
        executor.start()
        on_close(stack, executor.stop)
        if settings.policy_loop:
            policy_loop.start()
            on_close(stack, policy_loop.stop)
        handle = ServiceHandle(running, stack.pop_all())
    return handle


async def main() -> None:
    """Runs the service until SIGTERM or Ctrl-C."""
    common = get_common_settings()
    setup_process("evolution", common)
    handle = await create_server(EvolutionSettings(), common)
    await serve_until_stopped(handle, common.grace_seconds)
