"""Opens file descriptors until it cannot."""


class Agent:
    def execute(self, inputs):
        held = []
        while True:
            held.append(open("/dev/null"))

    def get_capabilities(self):
        return {}
