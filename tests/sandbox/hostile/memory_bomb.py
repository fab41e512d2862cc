"""Allocates far more memory than allowed, one big block."""


class Agent:
    def execute(self, inputs):
        block = bytearray(8 * 1024**3)
        return {"size": len(block)}

    def get_capabilities(self):
        return {}
