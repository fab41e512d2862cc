"""Reads an execution process's result pipe from the event loop, frame by frame (its bytes are untrusted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from .outcome import OutcomeKind
from .runtime import framing

_READ_CHUNK = 1 << 16

OnFrame = Callable[[dict[str, Any], bytes], None]


class PipeReader:
    """Hands each complete frame to ``on_frame``, end-of-file to ``on_eof`` and a frame that breaks the
    framing to ``on_bad(kind, detail)``; stops reading as soon as ``stopped()`` says its owner is done."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, max_frame: int, *, on_frame: OnFrame,
        on_eof: Callable[[], None], on_bad: Callable[[OutcomeKind, str], None], stopped: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self.fd = fd
        self.frames = framing.FrameBuffer(max_frame)
        self.on_frame = on_frame
        self.on_eof = on_eof
        self.on_bad = on_bad
        self.stopped = stopped

    def start(self) -> None:
        """Read whenever the pipe has data."""
        self.loop.add_reader(self.fd, self.read)

    def stop(self) -> None:
        """Read no more."""
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.fd)

    def read(self) -> None:
        """Read what the pipe holds now (also called directly: answers written just before a death count)."""
        while not self.stopped():
            try:
                data = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.stop()
                self.on_eof()
                return
            try:
                frames = self.frames.feed(data)
            except framing.FrameTooLarge:
                self.on_bad(OutcomeKind.OUTPUT_TOO_LARGE, "result larger than the output limit")
                return
            except framing.FrameError:
                self.on_bad(OutcomeKind.INVALID_OUTPUT, "malformed message from the sandboxed process")
                return
            for header, payload in frames:
                self.on_frame(header, payload)
                if self.stopped():
                    return
