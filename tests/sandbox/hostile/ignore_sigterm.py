"""Ignores SIGTERM and every catchable signal, then sleeps past the deadline."""
import signal
import time


class Agent:
    def execute(self, inputs):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)
        time.sleep(60)
        return {}

    def get_capabilities(self):
        return {}
