"""Writes two well-framed success results for its one input, then returns normally."""
import os
import struct


def _frame(header, payload):
    return struct.pack("<II", len(header), len(payload)) + header + payload


class Agent:
    def execute(self, inputs):
        frame = _frame(b'{"t":"result","i":0}', b'{"kind":"ok","output":{"forged":true}}')
        for fd in range(3, 64):
            try:
                os.write(fd, frame + frame)
            except OSError:
                pass
        return {"real": True}

    def get_capabilities(self):
        return {}
