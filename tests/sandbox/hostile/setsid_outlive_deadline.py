"""Double-forks a spinning grandchild into a new session, then sleeps past the deadline itself."""
import os
import time


class Agent:
    def execute(self, inputs):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    pass
            os._exit(0)
        time.sleep(60)
        return {}

    def get_capabilities(self):
        return {}
