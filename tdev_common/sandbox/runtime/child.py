"""Set-up of one execution process: its own uid, mount namespace and tmpfs, no privileges, no inherited fds."""

from __future__ import annotations

import json
import os
import select
import signal
from typing import Any, NoReturn

from . import framing, runner, syscalls

WORK_DIR = "/tmp"
_KILL_PASSES = 3
PRELOAD_HEADER = b'{"t":"preload"}'
ENVIRONMENT = {"HOME": WORK_DIR, "TMPDIR": WORK_DIR, "LANG": "C.UTF-8", "PATH": "/nonexistent"}


def serve(config: dict[str, Any], uid: int, job_r: int, res_w: int) -> NoReturn:
    """Isolate this freshly forked process, wait for one job, run it and exit."""
    syscalls.set_process_name("tdev-idle")
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _keep_only_fds(job_r, res_w)
    work_dir = _isolate(config, uid)
    os.setsid()
    # Last, after the mounts that need the syscalls its late part denies, and before any agent code.
    _install_seccomp(config)
    if work_dir != WORK_DIR:  # weak mode: the zygote's environment names the namespace mode's work dir
        os.environ["TMPDIR"] = os.environ["HOME"] = work_dir
    # A process whose job (or what to preload) came while it was being set up skips the rehearsal: the job
    # would only wait for it, and a preload pays the same first-use costs on the agent's own code.
    rehearsed = not _frame_waiting(job_r)
    if rehearsed:
        runner.rehearse(bytecode=bool(config.get("bytecode")))
    reporter = runner.prepare(res_w)
    set_batch_scheduling(False)
    kind, payload = _read_job(job_r)
    weak = config["mode"] == "weak"
    if kind == "preload":
        _run_preloaded(payload, reporter, weak=weak, work_dir=work_dir, jobs_fd=job_r, rehearsed=rehearsed)
    else:
        syscalls.set_process_name("tdev-job")
        runner.run_job(payload, reporter, weak=weak, work_dir=work_dir, jobs_fd=job_r)
    # The job ended with ``done`` and a closed pipe, which is what the service waits for; it kills us
    # then. Frames agent code wrote itself before ours make the job invalid, and if agent code closed or
    # swapped the pipe, there is no ``done``: the exit status decides. A session ends when the service
    # closes its job pipe (it kills us then too).
    os._exit(0)


def _run_preloaded(
    payload: bytes, reporter: runner.Reporter, *, weak: bool, work_dir: str, jobs_fd: int, rehearsed: bool
) -> None:
    """Load the agent of ``payload`` (a job without inputs) while this process waits in the pool, then run
    the inputs of the ``go`` frame that follows as :func:`runner.run_job` would (docs/sandbox.md,
    "Preloading"). The module body runs under the job's limits, in the process that runs its inputs; a load
    failure is reported when they come, as without preloading. ``jobs_fd`` is closed before any input runs."""
    loaded = runner.load_job(json.loads(payload), reporter, weak=weak, work_dir=work_dir)
    if not rehearsed:
        runner.rehearse(load=False)  # the answer's path: the load just paid for its own
    inputs = runner.read_go(jobs_fd)
    if inputs:
        syscalls.set_process_name("tdev-job")
        runner.run_loaded(loaded, inputs, session=0, jobs_fd=-1)


def set_batch_scheduling(batch: bool) -> None:
    """SCHED_BATCH for the zygote, the forkers and execution processes while they are set up: their work
    (refilling the pool) never preempts a running job on wake-up. An idle execution process goes back to
    SCHED_OTHER (allowed unprivileged: same nice value) before it waits for its job. Best effort."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH if batch else os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        pass


_SECCOMP: tuple[syscalls.SeccompFilter, syscalls.SeccompFilter] | None = None  # inherited part, late part
_EXIT_NO_SECCOMP = 73


def prepare_seccomp(config: dict[str, Any]) -> str:
    """Build the two parts of the filter once in the zygote, check that this kernel accepts them stacked (in a
    throw-away process), and return the status to report: ``on``, ``off`` or why it is unavailable.

    Raises:
        RuntimeError: the mode is ``strict`` and the filter cannot be installed (fail closed).
    """
    global _SECCOMP
    mode = config.get("seccomp_mode", "off")
    bpf, late_bpf = str(config.get("seccomp_bpf") or ""), str(config.get("seccomp_late_bpf") or "")
    if mode == "off":
        return "off"
    problem = config.get("seccomp_error") or ("no filter was provided" if not (bpf and late_bpf) else "")
    if not problem:
        try:
            candidate = (syscalls.SeccompFilter(bytes.fromhex(bpf)), syscalls.SeccompFilter(bytes.fromhex(late_bpf)))
            problem = _try_install(candidate)
        except ValueError as exc:
            problem = str(exc)
        if not problem:
            _SECCOMP = candidate
            return "on"
    if mode == "strict":
        raise RuntimeError(f"seccomp is required (strict) but unavailable: {problem}")
    return f"unavailable: {problem}"


def _try_install(candidate: tuple[syscalls.SeccompFilter, syscalls.SeccompFilter]) -> str:
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
            for part in candidate:
                part.install()
            code = 0
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "" if code == 0 else f"the kernel refused the filter ({os.strerror(code) if code > 0 else code})"


def install_inherited_seccomp() -> None:
    """In a forker (after no_new_privs): install the large part of the filter, which every execution process
    it forks inherits; a forker that cannot exits, and the runtime with it (it reported the filter as on)."""
    if _SECCOMP is None:
        return
    try:
        _SECCOMP[0].install()
    except OSError:
        os._exit(_EXIT_NO_SECCOMP)


def _install_seccomp(config: dict[str, Any]) -> None:
    """Install the late part of the filter (the inherited part is in force since the fork); a process that
    cannot never runs agent code (the runtime reported the filter as on, and in strict mode it must be)."""
    if _SECCOMP is None:
        if config.get("seccomp_mode") == "strict":
            os._exit(_EXIT_NO_SECCOMP)  # not reached: a strict runtime does not start without a filter
        return
    try:
        _SECCOMP[1].install()
    except OSError:
        os._exit(_EXIT_NO_SECCOMP)


def _keep_only_fds(*keep: int) -> None:
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)  # also closes devnull and every fd of the zygote


def _isolate(config: dict[str, Any], uid: int) -> str:
    """Give the process its own tmpfs and uid, then drop every privilege; returns the work dir."""
    if config["mode"] == "weak":
        work_dir = os.path.join(config["weak_work_root"], f"x{uid}")
        os.mkdir(work_dir, 0o700)
        if os.getuid() == 0:
            os.chown(work_dir, uid, uid)
    else:
        work_dir = WORK_DIR
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWIPC)
        options = (
            f"size={config['work_dir_bytes']},nr_inodes={config['work_dir_inodes']},"
            f"mode=0700,uid={uid},gid={uid}"
        )
        syscalls.mount("tmpfs", WORK_DIR, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, options)
    os.chdir(work_dir)
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if 0 in os.getresuid() or 0 in os.getresgid() or _effective_caps() != 0:
            os._exit(71)
        # setuid made us non-dumpable, which would hide us even from the zygote (our mm belongs to the
        # host user namespace); dumpable again, we stay invisible to other executions (hidepid=2, own uid).
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
    if config["mode"] == "weak":  # in namespace mode the pid namespace dies with the zygote anyway
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    return work_dir


def _effective_caps() -> int:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        status = os.read(fd, 65536)
    finally:
        os.close(fd)
    start = status.find(b"CapEff:")
    return int(status[start + 7 :].split(None, 1)[0], 16) if start >= 0 else -1


def _frame_waiting(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _read_job(fd: int) -> tuple[str, bytes]:
    """The first frame: its kind (``job``, or ``preload``: a job whose inputs follow later) and payload."""
    frame = framing.read_frame(fd)
    if frame is None:
        os._exit(0)  # the zygote went away before giving us a job
    return ("preload" if frame[0] == PRELOAD_HEADER else "job"), frame[1]


def kill_uid(uid: int) -> NoReturn:
    """Become ``uid`` and SIGKILL every process of it (kill(-1) needs no /proc visibility); never returns.

    Run in a throw-away process. One pass would do: kill(-1) signals every process of the uid under the
    task-list lock, and a process with SIGKILL pending cannot complete a fork, so even a fork bomb cannot
    outrun it; the extra passes are cheap insurance.
    """
    try:
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        for _ in range(_KILL_PASSES):
            os.kill(-1, signal.SIGKILL)
            os.sched_yield()
    except OSError:
        pass
    finally:
        os._exit(0)


def remove_work_dir(config: dict[str, Any], uid: int) -> None:
    """Delete a weak-mode work directory (namespace mode needs nothing: the tmpfs dies with the process)."""
    path = os.path.join(config["weak_work_root"], f"x{uid}")
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
        for name in dirs:
            full = os.path.join(root, name)
            try:
                os.unlink(full) if os.path.islink(full) else os.rmdir(full)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def describe(config: dict[str, Any]) -> dict[str, Any]:
    """What the runtime reports about itself at start-up."""
    return {
        "mode": config["mode"],
        "seccomp": config.get("seccomp_status", "off"),
        "uid": os.getuid(),
        "pid": os.getpid(),
        "hostname": os.uname().nodename,
        "bytecode_magic": runner.MAGIC,
    }
