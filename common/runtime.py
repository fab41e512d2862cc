"""What every service's ``main()`` does around its composition root: logging, tracing, stop on signal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from common.config import CommonSettings
from common.grpc_server import RunningServer, install_stop_signals
from common.telemetry import configure_logging, configure_tracing, shutdown_tracing

log = structlog.get_logger(__name__)


@dataclass
class ServiceHandle:
    """A started service: its server plus what must be closed after the server has drained."""

    running: RunningServer
    closers: Sequence[Callable[[], Awaitable[object]]] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The bound port."""
        return self.running.port

    async def close(self, grace: float = 5.0) -> None:
        """Stops the server gracefully, then releases resources in reverse order of creation."""
        await self.running.stop(grace)
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("close_failed", closer=getattr(closer, "__qualname__", repr(closer)))


def setup_process(service: str, common: CommonSettings) -> None:
    """Configures logging and tracing for a service process."""
    configure_logging(service, common.log_level, common.log_json)
    configure_tracing(f"tdev-{service}", common.otel_exporter, otlp_endpoint=common.otlp_endpoint)


async def serve_until_stopped(handle: ServiceHandle, grace: float) -> None:
    """Serves until SIGTERM/SIGINT or server termination, then drains for ``grace`` seconds and closes."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    terminated = asyncio.create_task(handle.running.wait_for_termination())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({terminated, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("service_stopping", grace_seconds=grace)
        await handle.close(grace)
        for task in (terminated, stopping):
            task.cancel()
        shutdown_tracing()
