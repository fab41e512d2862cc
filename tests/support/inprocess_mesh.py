"""The four services started in this process on free loopback ports, each knowing the others' addresses."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator

from tdev_cli.mesh import SERVICES
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle
from tests.support.servers import free_port


@contextlib.asynccontextmanager
async def inprocess_mesh(common: CommonSettings) -> AsyncIterator[dict[str, int]]:
    """Starts registry, workflow, evolution and builder (in that order); yields their ports by service name."""
    ports = {service.name: free_port() for service in SERVICES}
    common = common.model_copy(update={f"{name}_address": f"127.0.0.1:{port}" for name, port in ports.items()})
    handles: list[ServiceHandle] = []
    try:
        for service in SERVICES:
            server = importlib.import_module(f"{service.module}.server")
            config = importlib.import_module(f"{service.module}.config")
            settings = getattr(config, f"{service.name.capitalize()}Settings")()
            handles.append(await server.create_server(settings, common, port=ports[service.name]))
        yield ports
    finally:
        for handle in reversed(handles):
            await handle.close(grace=0)
