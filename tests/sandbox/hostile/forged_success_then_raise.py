"""Writes a well-framed success result for its input itself, then raises: the service must not report
the forged success (the runtime's own error frame follows it)."""
import os
import struct


def _frame(header, payload):
    return struct.pack("<II", len(header), len(payload)) + header + payload


class Agent:
    def execute(self, inputs):
        frame = _frame(b'{"t":"result","i":0}', b'{"kind":"ok","output":{"forged":true}}')
        for fd in range(3, 64):
            try:
                os.write(fd, frame)
            except OSError:
                pass
        raise RuntimeError("the real outcome")

    def get_capabilities(self):
        return {}
