"""Tries to regain root: setuid(0), unshare a user namespace, mount, chroot, ptrace-like reads."""
import ctypes
import os


class Agent:
    def execute(self, inputs):
        libc = ctypes.CDLL(None, use_errno=True)
        attempts = {
            "setuid0": lambda: os.setuid(0),
            "unshare_user": lambda: _check(libc.unshare(0x10000000)),
            "unshare_mount": lambda: _check(libc.unshare(0x00020000)),
            "mount_tmpfs": lambda: _check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)),
            "chroot": lambda: os.chroot("/tmp"),
        }
        results = {}
        for name, attempt in attempts.items():
            try:
                attempt()
                results[name] = "succeeded"
            except OSError as exc:
                results[name] = type(exc).__name__
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        return {
            "results": results,
            "uid": os.getuid(),
            "cap_eff": status["CapEff"].strip(),
            "no_new_privs": status["NoNewPrivs"].strip(),
        }

    def get_capabilities(self):
        return {}


def _check(rc):
    if rc != 0:
        raise OSError(ctypes.get_errno(), "failed")
