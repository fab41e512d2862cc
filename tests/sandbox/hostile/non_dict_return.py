"""Returns a list instead of a dict."""


class Agent:
    def execute(self, inputs):
        return ["not", "a", "dict"]

    def get_capabilities(self):
        return {}
