"""The four services started in this process on free loopback ports, each knowing the others' addresses."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator

from tdev_cli.mesh import SERVICES
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle

# Dependencies first: the builder calls evolution, which calls the registry.
START_ORDER = ("registry", "workflow", "evolution", "builder")


@contextlib.asynccontextmanager
async def inprocess_mesh(common: CommonSettings) -> AsyncIterator[dict[str, int]]:
    """Starts registry, workflow, evolution and builder (in that order); yields their ports by service name."""
    # Each binds port 0 itself (no probe-then-bind race); every service only calls those started before it.
    ports: dict[str, int] = {}
    handles: list[ServiceHandle] = []
    try:
        for service in sorted(SERVICES, key=lambda service: START_ORDER.index(service.name)):
            server = importlib.import_module(f"{service.module}.server")
            config = importlib.import_module(f"{service.module}.config")
            settings = getattr(config, f"{service.name.capitalize()}Settings")()
            known = common.model_copy(update={f"{name}_address": f"127.0.0.1:{port}" for name, port in ports.items()})
            handle = await server.create_server(settings, known, port=0)
            handles.append(handle)
            ports[service.name] = handle.port
        yield ports
    finally:
        for handle in reversed(handles):
            await handle.close(grace=0)
