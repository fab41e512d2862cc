"""Announces a gigantic result frame on the runtime's result pipe, hoping the service buffers it all."""
import os
import struct


class Agent:
    def execute(self, inputs):
        header = b'{"t":"result"}'
        frame = struct.pack("<II", len(header), 1 << 30) + header + b"x" * 65536
        for fd in range(3, 64):
            try:
                os.write(fd, frame)
            except OSError:
                pass
        return {}

    def get_capabilities(self):
        return {}
