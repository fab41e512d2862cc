"""In a batch, writes a success result for another input (inputs["forge_index"]) than the running one."""
import os
import struct


def _frame(header, payload):
    return struct.pack("<II", len(header), len(payload)) + header + payload


class Agent:
    def execute(self, inputs):
        if "forge_index" in inputs:
            header = b'{"t":"result","i":%d}' % inputs["forge_index"]
            frame = _frame(header, b'{"kind":"ok","output":{"forged":true}}')
            for fd in range(3, 64):
                try:
                    os.write(fd, frame)
                except OSError:
                    pass
        return {"real": inputs.get("x")}

    def get_capabilities(self):
        return {}
