"""Composition root of the builder service: settings -> engine -> servicer -> server."""

from __future__ import annotations

from pathlib import Path

from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from builder_svc.config import SCHEMA, BuilderSettings
from builder_svc.servicer import BuilderServiceServicer
from common.config import CommonSettings, get_common_settings
from common.db import create_engine, migrate
from common.grpc_server import ServiceBinding, build_server
from common.runtime import ServiceHandle, serve_until_stopped, setup_process

MIGRATIONS = Path(__file__).parent / "migrations"


async def create_server(
    settings: BuilderSettings, common: CommonSettings, *, port: int | None = None
) -> ServiceHandle:
    """Builds and starts the builder service; ``port=0`` binds a free port (tests)."""
    engine = create_engine(settings.resolved_database_url(common, SCHEMA), SCHEMA)
    try:
        await migrate(engine, MIGRATIONS, SCHEMA)
        servicer = BuilderServiceServicer()
        running = await build_server(
            [
                ServiceBinding(
                    pb2.DESCRIPTOR.services_by_name["BuilderService"],
                    servicer,
                    pb2_grpc.add_BuilderServiceServicer_to_server,
                )
            ],
            host=common.host,
            port=settings.port if port is None else port,
            max_message_mb=common.grpc_max_message_mb,
        )
    except BaseException:
        await engine.dispose()
        raise
    return ServiceHandle(running, closers=[engine.dispose])


async def main() -> None:
    """Runs the service until SIGTERM or Ctrl-C."""
    common = get_common_settings()
    setup_process("builder", common)
    handle = await create_server(BuilderSettings(), common)
    await serve_until_stopped(handle, common.grace_seconds)
