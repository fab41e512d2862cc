"""The one way tests pick a loopback port for a server that is started later (a subprocess, a private Redis)."""

from __future__ import annotations

import random
import socket
import threading

# Ports this process has handed out: two picks in a row must never return the same port even though each probe
# socket is closed again before the caller binds (four services started from one batch of picks would collide).
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on and this process has not handed out before, below the kernel's
    ephemeral range: a port bind(0) hands out could be taken as the source port of another process's outgoing
    connection before our server binds it. Servers started in this process should bind port 0 instead."""
    rng = random.Random()
    with _lock:
        for _ in range(2_000):
            port = rng.randrange(20_000, 32_000)
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports."""
    return [free_port() for _ in range(count)]
