"""Spawns a shell with subprocess."""
import subprocess


class Agent:
    def execute(self, inputs):
        done = subprocess.run(["/bin/sh", "-c", "id; cat /etc/passwd"], capture_output=True, check=False)
        return {"stdout": done.stdout.decode()}

    def get_capabilities(self):
        return {}
