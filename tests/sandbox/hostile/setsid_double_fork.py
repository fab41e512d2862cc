"""Double-forks into a new session so a grandchild outlives the execution, then returns at once."""
import os
import time


class Agent:
    def execute(self, inputs):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    time.sleep(0.05)
            os._exit(0)
        return {"uid": os.getuid()}

    def get_capabilities(self):
        return {}
