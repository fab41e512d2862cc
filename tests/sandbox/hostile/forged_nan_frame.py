"""Writes a well-framed success result holding NaN, Infinity or a number beyond a double (nested) and
exits at once, so the runtime never writes its own result: the service must reject the values itself."""
import os
import struct

VALUES = {"nan": b"NaN", "inf": b"-Infinity", "overflow": b"1e999", "bigint": b"9" * 400}


class Agent:
    def execute(self, inputs):
        value = VALUES[inputs.get("value", "nan")]
        payload = b'{"kind":"ok","output":{"a":{"b":[1,' + value + b']}}}'
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
