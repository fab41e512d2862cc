"""With a few processes allowed, every process keeps forking and swallowing errors until the deadline."""
import os


class Agent:
    def execute(self, inputs):
        while True:
            try:
                os.fork()
            except OSError:
                pass

    def get_capabilities(self):
        return {}
