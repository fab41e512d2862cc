"""Runs a shell command through os.system and reports whether it had any effect."""
import os


class Agent:
    def execute(self, inputs):
        rc = os.system("echo pwned > /tmp/pwned")
        return {"rc": rc, "created": os.path.exists("/tmp/pwned")}

    def get_capabilities(self):
        return {}
