"""A replica's name in leases, chosen by one rule for every service that leases work (workflow, builder, evolution)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from tdev_common.db import is_sqlite


@dataclass(frozen=True)
class WorkerIdentity:
    """This replica's lease owner name and whether it takes back leases held under that name at start-up."""

    name: str
    reclaim_own: bool


def worker_identity(configured: str, database_url: str) -> WorkerIdentity:
    """The name leases are held under.

    A configured name is stable across restarts, so a restarted replica takes its own leases back at once
    instead of waiting for them to expire (no other live process may use the same name). On SQLite only
    one process may use the file, so it gets a stable name too. Otherwise the name is unique per process
    and a crashed replica's work moves after its lease expires.
    """
    if configured:
        return WorkerIdentity(configured, True)
    if is_sqlite(database_url):
        return WorkerIdentity(f"embedded-{socket.gethostname()}", True)
    return WorkerIdentity(f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}", False)
