"""Recurses without a base case."""


class Agent:
    def execute(self, inputs):
        return self.execute(inputs)

    def get_capabilities(self):
        return {}
