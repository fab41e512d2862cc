"""The syscall filter of execution processes, compiled once in the service with libseccomp (pyseccomp).

The runtime itself has no site-packages and should stay small (fork cost grows with its memory), so it does
not import a binding: the service compiles the filter to classic BPF here and hands the bytes over in the
runtime's configuration; each execution process installs them with one ``prctl`` (runtime/syscalls.py).
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


@dataclass(frozen=True)
class SeccompProgram:
    """A compiled filter: classic BPF instructions (8 bytes each) and the syscalls it denies."""

    bpf: bytes
    denied: tuple[str, ...]

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
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        deny = seccomp.ERRNO(errno.EPERM)
        denied = []
        for name in DENIED_SYSCALLS:
            if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) < 0:
                continue  # not a syscall of this architecture or unknown to this libseccomp
            rules.add_rule(deny, name)
            denied.append(name)
        for flag in CLONE_NAMESPACE_FLAGS:
            rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3") >= 0:
            rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as out:
            rules.export_bpf(out)
            out.seek(0)
            bpf = out.read()
    except (OSError, ValueError) as exc:
        raise SeccompUnavailableError(f"libseccomp could not compile the filter: {exc}") from exc
    if not bpf or len(bpf) % 8:
        raise SeccompUnavailableError(f"libseccomp exported a malformed program of {len(bpf)} bytes")
    return SeccompProgram(bpf, tuple(denied))
