"""The syscall filter of execution processes, compiled once in the service with libseccomp (pyseccomp).

The runtime itself has no site-packages and should stay small (fork cost grows with its memory), so it does
not import a binding: the service compiles the filter to classic BPF here and hands the bytes over in the
runtime's configuration (runtime/syscalls.py installs them with one ``prctl``).

The filter comes in two parts because installing one JIT-compiles it, which cost each execution process about
0.1 ms: the forkers install the large part once and every process they fork inherits it; an execution process
installs only the small part, the calls its own set-up still needs (``mount``, ``unshare``), after that set-up.
Stacked, the two deny exactly what one filter would.
"""

from __future__ import annotations

import errno
import functools
import tempfile
from dataclasses import dataclass

# Syscalls no agent needs and that widen the kernel surface (debugging other processes, eBPF, keyrings,
# mounts and namespaces, kernel modules, io_uring, reading or writing other processes' memory, handles that
# bypass path checks, the clock, swap, rebooting). Denied with EPERM, so agent code gets an OSError.
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "lookup_dcookie", "uselib", "nfsservctl",
)  # fmt: skip

# clone(2) is how fork() and threads are made, so only its namespace flags are denied (its flags are a
# plain argument). clone3(2) passes them in memory a filter cannot read: it fails with ENOSYS, which makes
# glibc fall back to clone(2).
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


class SeccompUnavailableError(RuntimeError):
    """The filter cannot be built here (no binding, no libseccomp.so.2, unsupported architecture)."""


# Denied only once an execution process has made its own mount and ipc namespace and mounted its tmpfs.
SETUP_SYSCALLS: tuple[str, ...] = ("mount", "unshare")


@dataclass(frozen=True)
class SeccompProgram:
    """A compiled filter in two parts of classic BPF (8 bytes per instruction): ``bpf``, inherited from the
    forkers, and ``late_bpf``, installed by each execution process after its set-up; the syscalls denied."""

    bpf: bytes
    denied: tuple[str, ...]
    late_bpf: bytes

    @property
    def summary(self) -> str:
        return f"{len(self.denied)} syscalls and namespace flags of clone denied with EPERM, clone3 ENOSYS"


@functools.cache
def compile_filter() -> SeccompProgram:
    """Compile the execution processes' filter (cached: once per service process).

    Raises:
        SeccompUnavailableError: pyseccomp or libseccomp.so.2 is missing, or libseccomp refused the rules.
    """
    try:
        import pyseccomp as seccomp  # type: ignore[import-untyped]
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: "Unable to find libseccomp"
        raise SeccompUnavailableError(f"no seccomp binding: {exc}") from exc
    try:
        denied = [name for name in DENIED_SYSCALLS if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0]
        deny = seccomp.ERRNO(errno.EPERM)
        inherited = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in denied:  # names unknown on this architecture (or to this libseccomp) were left out
            if name not in SETUP_SYSCALLS:
                inherited.add_rule(deny, name)
        for flag in CLONE_NAMESPACE_FLAGS:
            inherited.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3") >= 0:
            inherited.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        late = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in SETUP_SYSCALLS:
            late.add_rule(deny, name)
        bpf, late_bpf = _export(inherited), _export(late)
    except (OSError, ValueError) as exc:
        raise SeccompUnavailableError(f"libseccomp could not compile the filter: {exc}") from exc
    for program in (bpf, late_bpf):
        if not program or len(program) % 8:
            raise SeccompUnavailableError(f"libseccomp exported a malformed program of {len(program)} bytes")
    return SeccompProgram(bpf, tuple(denied), late_bpf)


def _export(rules: object) -> bytes:
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)  # type: ignore[attr-defined]
        out.seek(0)
        return out.read()
