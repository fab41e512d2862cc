"""Length-prefixed frames (JSON header + opaque payload) used on every sandbox pipe."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

_PREFIX = struct.Struct("<II")
PREFIX_SIZE = _PREFIX.size


class FrameError(ValueError):
    """A frame was malformed."""


class FrameTooLarge(FrameError):
    """A well-formed frame is larger than allowed."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """Return one frame: two little-endian u32 lengths, the JSON header, then the payload."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(len(head), len(payload)) + head + payload


def lengths(prefix: bytes) -> tuple[int, int]:
    """Return (header length, payload length) from a frame prefix."""
    head_len, payload_len = _PREFIX.unpack(prefix)
    return head_len, payload_len


def read_frame(fd: int) -> tuple[bytes, bytes] | None:
    """Read one frame from blocking ``fd``: (header bytes, payload), or None at end-of-file."""
    prefix = _read_exact(fd, PREFIX_SIZE)
    if prefix is None:
        return None
    head_len, payload_len = lengths(prefix)
    body = _read_exact(fd, head_len + payload_len)
    return None if body is None else (body[:head_len], body[head_len:])


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        data = os.read(fd, min(size - len(chunks), 1 << 20))
        if not data:
            return None
        chunks += data
    return bytes(chunks)


class FrameBuffer:
    """Accumulates bytes from a non-blocking fd and yields complete frames.

    Raises:
        FrameTooLarge: a frame exceeds ``max_frame`` bytes.
        FrameError: a header is malformed.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buf += data
        frames: list[tuple[dict[str, Any], bytes]] = []
        while len(self._buf) >= PREFIX_SIZE:
            head_len, payload_len = lengths(bytes(self._buf[:PREFIX_SIZE]))
            total = PREFIX_SIZE + head_len + payload_len
            if head_len > 65536:
                raise FrameError(f"frame header of {head_len} bytes is malformed")
            if total > self.max_frame:
                raise FrameTooLarge(f"frame of {total} bytes exceeds the limit of {self.max_frame}")
            if len(self._buf) < total:
                break
            head = bytes(self._buf[PREFIX_SIZE : PREFIX_SIZE + head_len])
            payload = bytes(self._buf[PREFIX_SIZE + head_len : total])
            del self._buf[:total]
            try:
                header = json.loads(head)
            except ValueError as exc:
                raise FrameError("frame header is not JSON") from exc
            if not isinstance(header, dict):
                raise FrameError("frame header is not an object")
            frames.append((header, payload))
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)
