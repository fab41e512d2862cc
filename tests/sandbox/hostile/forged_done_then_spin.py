"""Writes a forged result and the runtime's ``done`` frame itself, closes every descriptor (so the service
sees end-of-file), then spins: the service may take the answer it forged (it could have returned it), but
the process must not live on after the answer was taken."""
import os
import struct


def _frame(header, payload):
    return struct.pack("<II", len(header), len(payload)) + header + payload


class Agent:
    def execute(self, inputs):
        payload = b'{"kind":"ok","output":{"uid":' + str(os.getuid()).encode() + b'}}'
        frames = _frame(b'{"t":"result","i":0}', payload) + _frame(b'{"t":"done"}', b"")
        for fd in range(3, 64):
            try:
                os.write(fd, frames)
            except OSError:
                pass
        os.closerange(3, 64)
        while True:
            pass

    def get_capabilities(self):
        return {}
