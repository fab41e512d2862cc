"""Reads a file the service wrote outside the sandbox (path given in inputs)."""


class Agent:
    def execute(self, inputs):
        with open(inputs["path"]) as f:
            return {"content": f.read()}

    def get_capabilities(self):
        return {}
