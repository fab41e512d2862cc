"""Writes one file larger than the file-size limit."""


class Agent:
    def execute(self, inputs):
        with open("big.bin", "wb") as f:
            for _ in range(64):
                f.write(b"\0" * (1024 * 1024))
        return {"written": True}

    def get_capabilities(self):
        return {}
