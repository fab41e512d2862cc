"""Grows its memory 8 MiB at a time until something gives."""


class Agent:
    def execute(self, inputs):
        hoard = []
        while True:
            hoard.append(b"x" * (8 * 1024 * 1024))

    def get_capabilities(self):
        return {}
