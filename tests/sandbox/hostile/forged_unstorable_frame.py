"""Writes a well-framed success result that Postgres or protobuf could not hold (a NUL in a key or a
string, a lone surrogate, deep nesting, a list at the top) and exits at once."""
import os
import struct

OUTPUTS = {
    "nul_value": b'{"text":"a\\u0000b"}',
    "nul_key": b'{"a\\u0000":1}',
    "surrogate": b'{"text":"\\ud800"}',
    "deep": b'{"x":' + b"[" * 40 + b"]" * 40 + b"}",
    "list": b"[1,2,3]",
}


class Agent:
    def execute(self, inputs):
        payload = b'{"kind":"ok","output":' + OUTPUTS[inputs["variant"]] + b"}"
        header = b'{"t":"result","i":0}'
        frame = struct.pack("<II", len(header), len(payload)) + header + payload
        for fd in range(3, 64):
            try:
                os.write(fd, frame)
            except OSError:
                pass
        os._exit(0)

    def get_capabilities(self):
        return {}
