"""Returns a result far above the output cap."""


class Agent:
    def execute(self, inputs):
        return {"blob": "a" * (8 * 1024 * 1024)}

    def get_capabilities(self):
        return {}
