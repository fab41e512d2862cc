"""Writes a forged success result, then puts /dev/null where the result pipe was and raises, so the
runtime's own error frame would go nowhere."""
import os
import struct


class Agent:
    def execute(self, inputs):
        header = b'{"t":"result","i":0}'
        payload = b'{"kind":"ok","output":{"forged":true}}'
        frame = struct.pack("<II", len(header), len(payload)) + header + payload
        devnull = os.open("/dev/null", os.O_WRONLY)
        for fd in range(3, 64):
            if fd == devnull:
                continue
            try:
                os.write(fd, frame)
                os.dup2(devnull, fd)
            except OSError:
                pass
        raise RuntimeError("the real outcome")

    def get_capabilities(self):
        return {}
