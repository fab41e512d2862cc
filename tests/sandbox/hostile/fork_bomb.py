"""Forks without end: the first fork must fail (no new processes by default)."""
import os


class Agent:
    def execute(self, inputs):
        while True:
            os.fork()

    def get_capabilities(self):
        return {}
