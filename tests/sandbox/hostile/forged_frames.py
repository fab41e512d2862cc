"""Writes garbage into every low file descriptor, hoping to confuse the runtime's protocol."""
import os


class Agent:
    def execute(self, inputs):
        for fd in range(1024):
            try:
                os.write(fd, b"\xff\xff\xff\x7f\x00\x00\x00\x00 garbage frame")
            except OSError:
                pass
        return {"after": "garbage"}

    def get_capabilities(self):
        return {}
