"""Writes 1 MiB files into its work directory until the disk is full."""
import os


class Agent:
    def execute(self, inputs):
        chunk = b"\0" * (1024 * 1024)
        for i in range(100_000):
            with open(os.path.join(os.getcwd(), f"fill-{i}"), "wb") as f:
                f.write(chunk)
        return {"filled": True}

    def get_capabilities(self):
        return {}
