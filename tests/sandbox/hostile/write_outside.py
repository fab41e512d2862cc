"""Tries to write files outside its work directory; reports which writes succeeded."""
import os


class Agent:
    def execute(self, inputs):
        targets = [inputs["path"], "/opt/tdev/sandbox/pwned.py", "/usr/lib/pwned", "/pwned", "/proc/pwned"]
        written = []
        for path in targets:
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                written.append(path)
            except OSError:
                pass
        return {"written": written, "cwd": os.getcwd()}

    def get_capabilities(self):
        return {}
