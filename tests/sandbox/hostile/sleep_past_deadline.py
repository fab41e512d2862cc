"""Sleeps far beyond the wall-clock deadline."""
import time


class Agent:
    def execute(self, inputs):
        time.sleep(60)
        return {}

    def get_capabilities(self):
        return {}
