"""Prints about 50 MB, then returns normally."""
import sys


class Agent:
    def execute(self, inputs):
        line = "x" * 999
        for _ in range(50_000):
            print(line)
            sys.stderr.write(line + "\n")
        return {"done": True}

    def get_capabilities(self):
        return {}
