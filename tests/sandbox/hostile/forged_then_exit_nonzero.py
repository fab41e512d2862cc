"""Writes a forged success result and exits with a non-zero status."""
import os
import struct


class Agent:
    def execute(self, inputs):
        header = b'{"t":"result","i":0}'
        payload = b'{"kind":"ok","output":{"forged":true}}'
        frame = struct.pack("<II", len(header), len(payload)) + header + payload
        for fd in range(3, 64):
            try:
                os.write(fd, frame)
            except OSError:
                pass
        os._exit(3)

    def get_capabilities(self):
        return {}
