"""Exits the process from inside execute without returning."""
import os


class Agent:
    def execute(self, inputs):
        os._exit(0)

    def get_capabilities(self):
        return {}
