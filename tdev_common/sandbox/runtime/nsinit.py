"""Entry point of the sandbox runtime: enters the namespaces, builds the root file system, starts the zygote.

Run by the service as ``python -I -S -B -X utf8 -c BOOT CONFIG_JSON`` with an empty environment.
In namespace mode the process unshares user/mount/pid/net/ipc/uts namespaces, has a short-lived helper
(still root in the host namespace) write a uid/gid map covering a whole range of host ids, and forks the
zygote as pid 1 of the new pid namespace. The zygote builds a minimal read-only root (interpreter,
system libraries, a few device nodes, /proc with hidepid=2, an empty /tmp mount point), pivots into it,
becomes uid 0 of the namespace (an unprivileged host uid) and keeps the service supplied with isolated
execution processes. The control socket arrives as ``config["control_fd"]`` and is moved to fd 3.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from . import framing, syscalls, zygote

_NS_FLAGS = (
    syscalls.CLONE_NEWUSER
    | syscalls.CLONE_NEWNS
    | syscalls.CLONE_NEWPID
    | syscalls.CLONE_NEWNET
    | syscalls.CLONE_NEWIPC
    | syscalls.CLONE_NEWUTS
)
_STAGE = "/tmp"
RUNTIME_MOUNT = "/opt/tdev/sandbox"
_DEVICES = ("null", "zero", "full", "random", "urandom")


def main(raw_config: str) -> None:
    """Start the runtime described by ``raw_config`` (JSON); never returns."""
    config: dict[str, Any] = json.loads(raw_config)
    if config["control_fd"] != zygote.CONTROL_FD:
        os.dup2(config["control_fd"], zygote.CONTROL_FD)
        os.close(config["control_fd"])
    try:
        if config["mode"] == "weak":
            zygote.main(config)
        else:
            _launch_namespaced(config)
    except BaseException as exc:  # report why start-up failed, then die
        _report_fatal(f"{type(exc).__name__}: {exc}")
        os._exit(70)
    os._exit(0)


def _report_fatal(message: str) -> None:
    try:
        os.write(zygote.CONTROL_FD, framing.encode({"op": "fatal", "error": message}))
    except OSError:
        pass


def _launch_namespaced(config: dict[str, Any]) -> None:
    _enter_namespaces(config["uid_base"], config["uid_count"])
    pid = os.fork()
    if pid == 0:
        try:
            # Dies with the launcher (getppid() is 0 across the pid namespace, so no race check is possible;
            # an orphaned zygote still exits when its control pipe closes).
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            _build_root(config)
            _drop_bounding_set()
            config["runtime_path"] = RUNTIME_MOUNT
            zygote.main(config)
        except BaseException as exc:
            _report_fatal(f"{type(exc).__name__}: {exc}")
            os._exit(70)
        os._exit(0)
    # The launcher only waits: it must not keep the control socket open (the service relies on its EOF).
    os.close(zygote.CONTROL_FD)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _enter_namespaces(uid_base: int, uid_count: int) -> None:
    """Unshare all namespaces; a helper still in the host user namespace writes the id maps."""
    go_r, go_w = os.pipe()
    ack_r, ack_w = os.pipe()
    target = os.getpid()
    helper = os.fork()
    if helper == 0:
        status = 1
        try:
            os.close(go_w)
            os.close(ack_r)
            if os.read(go_r, 1) == b"1":
                line = f"0 {uid_base} {uid_count}\n"
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{target}/{name}", "w") as f:
                        f.write(line)
                os.write(ack_w, b"1")
                status = 0
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(ack_w)
    try:
        syscalls.unshare(_NS_FLAGS)
    except OSError:
        os.write(go_w, b"0")
        raise
    os.write(go_w, b"1")
    mapped = os.read(ack_r, 1) == b"1"
    os.waitpid(helper, 0)
    os.close(go_w)
    os.close(ack_r)
    if not mapped:
        raise OSError("could not write the uid/gid map of the sandbox user namespace")


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(source_fd: int, is_dir: bool, target: str, *, read_only: bool) -> None:
    if is_dir:
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    syscalls.mount(f"/proc/self/fd/{source_fd}", target, None, syscalls.MS_BIND | syscalls.MS_REC)
    os.close(source_fd)
    if read_only:
        flags = syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY | syscalls.MS_NOSUID
        syscalls.mount(None, target, None, flags | syscalls.MS_NODEV)


def _open_sources(config: dict[str, Any]) -> list[tuple[int, bool, str, bool]]:
    """Open every bind source while still host root: paths like /root/... are not traversable later."""
    sources: list[tuple[str, str, bool]] = [(p, p, True) for p in config["read_only_paths"]]
    sources.append((config["runtime_path"], RUNTIME_MOUNT, True))
    sources += [(f"/dev/{name}", f"/dev/{name}", False) for name in _DEVICES]
    opened = []
    for source, target, read_only in sources:
        if os.path.islink(source) or not os.path.exists(source):
            continue
        fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
        opened.append((fd, os.path.isdir(source), target, read_only))
    return opened


def _build_root(config: dict[str, Any]) -> None:
    links = [(p, os.readlink(p)) for p in config["read_only_paths"] if os.path.islink(p)]
    sources = _open_sources(config)
    # Files created in the new tmpfs need a mapped owner: become uid 0 of the namespace now.
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # The uid change made us non-dumpable, so our /proc files would belong to the (unmapped) host root and
    # even our own /proc/self/comm would be read-only to us and our children.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount("tmpfs", _STAGE, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m,mode=0755")
    stage = _STAGE
    for path, destination in links:
        _mkdirs(stage + os.path.dirname(path))
        os.symlink(destination, stage + path)
    for fd, is_dir, target, read_only in sources:
        _bind(fd, is_dir, stage + target, read_only=read_only)
    _mkdirs(stage + "/proc")
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    syscalls.mount("proc", stage + "/proc", "proc", flags, "hidepid=2")
    os.mkdir(stage + "/tmp", 0o755)
    os.chdir(stage)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
    flags = syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(None, "/", None, flags)
    syscalls.sethostname("sandbox")
    _forbid_nested_namespaces()
    sys.path[:] = [p for p in sys.path if p.startswith(sys.base_prefix)]


def _forbid_nested_namespaces() -> None:
    """Executions may not create namespaces of their own (a nested user namespace would hand agent code
    capabilities over new namespaces, and the kernel surface that comes with them). These limits belong
    to our user namespace; mount and ipc namespaces stay allowed: the zygote gives one to each execution."""
    for kind in ("user", "pid", "net", "uts", "cgroup", "time"):
        path = f"/proc/sys/user/max_{kind}_namespaces"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("0")


def _drop_bounding_set() -> None:
    """Empty the capability bounding set: nothing forked from here can ever regain a capability."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
