"""Writes to a non-blocking pipe from the event loop without ever blocking it."""

from __future__ import annotations

import asyncio
import contextlib
import os


class PipeWriter:
    """Writes what it can at once and the rest when the pipe has room; a closed pipe is left to the caller's
    other signals (the process's exit settles what it was sent)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.pending = b""
        self.stopped = False

    def write(self, data: bytes) -> None:
        """Queue ``data`` after anything still pending."""
        if self.stopped:
            return
        if self.pending:
            self.pending += data
            return
        self._send(data)

    def stop(self) -> None:
        """Write nothing more."""
        self.stopped = True
        self.pending = b""
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_writer(self.fd)

    def _send(self, data: bytes) -> None:
        try:
            sent = os.write(self.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.pending = b""
            return
        self.pending = data[sent:]
        if self.pending:
            self.loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.fd)
        if not self.stopped:
            data, self.pending = self.pending, b""
            self._send(data)
