"""Spins the CPU forever."""


class Agent:
    def execute(self, inputs):
        n = 0
        while True:
            n += 1

    def get_capabilities(self):
        return {}
