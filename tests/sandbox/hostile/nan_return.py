"""Returns NaN or Infinity nested inside its result."""


class Agent:
    def execute(self, inputs):
        value = float(inputs.get("value", "nan"))
        return {"a": {"b": [1, value]}}

    def get_capabilities(self):
        return {}
