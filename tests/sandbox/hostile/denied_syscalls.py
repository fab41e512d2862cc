"""Calls syscalls through ctypes (numbers given in the inputs) with harmless arguments and reports the
errno of each; also tries clone(2) with CLONE_NEWUSER and clone3(2)."""
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "OK") if result == -1 else "OK"


class Agent:
    def execute(self, inputs):
        results = {name: _call(number, 0, 0, 0, 0, 0) for name, number in inputs["syscalls"].items()}
        clone = inputs["clone"]
        results["clone(CLONE_NEWUSER)"] = _call(clone, 0x10000000 | 17, 0, 0, 0, 0)
        results["clone3"] = _call(inputs["clone3"], 0, 0)
        return {"results": results}

    def get_capabilities(self):
        return {}
