"""Starts threads until it cannot."""
import threading
import time


class Agent:
    def execute(self, inputs):
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()

    def get_capabilities(self):
        return {}
