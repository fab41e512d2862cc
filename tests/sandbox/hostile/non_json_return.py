"""Returns a dict holding an arbitrary object."""


class Agent:
    def execute(self, inputs):
        return {"thing": object(), "nested": {1, 2, 3}}

    def get_capabilities(self):
        return {}
