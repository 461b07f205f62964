"""The waiter: a small static program (waiter.c, built by scripts/setup.sh into
pyoci/linux/pyoci-waiter) that the container's init executes instead of waiting for `start`
itself, so that a created container's init is a ~16 KiB process, not a forked interpreter.

The init does everything up to exec.fifo in Python, then execve's the waiter from a sealed
memfd (never the host file: through /proc/1/exe a container process could otherwise open it
for writing, runc's CVE-2019-5736); the waiter opens the fifo, writes "0", applies the final
CPU affinity, loads the seccomp filter (NNP case) and executes the program.

What survives the extra execve: PID, start time, namespaces, cgroup, credentials, rlimits,
NNP, seccomp, umask, cwd, personality, keyring, scheduler/ioprio/mempolicy/oom_score_adj and
the inherited fds. Capabilities: the transformation is idempotent. The memfd has no file
capabilities, so for uid 0 P' = I | B (+A) and E' = P', for others P' = E' = A; the
program's own execve then computes the same from the same I, B and A (a privileged root
also loses the personality flags PER_CLEAR_ON_SETID at the first execve that grows P, as it
would at runc's single one). The AppArmor/SELinux exec attribute, startContainer hooks and a
seccomp listener are not carried over: with those the Python init waits (uses()).
"""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import Process

NAME = "pyoci-waiter"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), NAME)
ENV = "PYOCI_WAITER"          # the binary to use instead; empty: never (the Python init waits)

_MFD_CLOEXEC = 0x1
_MFD_ALLOW_SEALING = 0x2
_MFD_EXEC = 0x10              # Linux 6.3+: executable even where vm.memfd_noexec asks otherwise
_F_ADD_SEALS = 1033
_F_SEAL_SEAL, _F_SEAL_SHRINK, _F_SEAL_GROW, _F_SEAL_WRITE, _F_SEAL_EXEC = 1, 2, 4, 8, 0x20
_EINVAL = 22

# What the waiter may call under a filter the init loaded before it (without
# noNewPrivileges the filter needs CAP_SYS_ADMIN, which the waiter may not have: the init
# loads it as the last thing before its execveat of the memfd), execveat being that execve.
# rt_sigreturn is never reached (the handlers exit) but listed to stay on the safe side;
# read is only used before any filter.
SYSCALLS = ("execveat", "prctl", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "openat",
            "write", "close", "sched_setaffinity", "execve", "exit_group")
_ALLOWING = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")


def binary_path() -> str:
    return os.environ.get(ENV, DEFAULT_PATH)


def uses(spec: dict) -> bool:
    """Whether the waiter can do the rest of this container's init (else the Python init
    waits: a full implementation, not a degraded one). spec is the config.json document:
    create asks before validating it (pyoci.linux.sealed), so this reads it with care."""
    proc = spec.get("process") or {}
    linux = spec.get("linux") or {}
    if (spec.get("hooks") or {}).get("startContainer"):
        return False                  # hooks run in the init after `start`: Python
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        return False                  # the exec attribute would confine the waiter, not the program
    seccomp = linux.get("seccomp")
    if seccomp:
        calls = seccomp.get("syscalls") or []
        if seccomp.get("listenerPath") or any(c.get("action") == "SCMP_ACT_NOTIFY"
                                              for c in calls):
            return False              # the listener fd goes to the agent after the load
        if not proc.get("noNewPrivileges") and not filter_allows_waiter(seccomp):
            return False
    return True


def available(spec: dict) -> bool:
    """Whether load() would give this container a waiter (without reading the binary)."""
    path = binary_path()
    return bool(path) and uses(spec) and os.access(path, os.R_OK)


def filter_allows_waiter(seccomp: dict) -> bool:
    """Conservatively, whether linux.seccomp lets every syscall of SYSCALLS through whatever
    its arguments: no rule with another action names one, and unless the default action
    allows, each has an ALLOW/LOG rule without argument conditions (so it is also below the
    -ENOSYS stub's limit)."""
    calls = seccomp.get("syscalls") or []
    mine = set(SYSCALLS)
    for c in calls:
        if c.get("action") not in _ALLOWING and mine & set(c.get("names") or ()):
            return False
    if seccomp.get("defaultAction") in _ALLOWING:
        return True
    allowed = {n for c in calls if c.get("action") in _ALLOWING and not c.get("args")
               for n in c.get("names") or ()}
    return mine <= allowed


def load(spec: dict) -> int:
    """A sealed, executable, close-on-exec memfd holding the waiter, or -1 when this container
    does not use it or there is none (not built, another architecture, PYOCI_WAITER="").
    Call it before pivot_root: the host file is out of reach afterwards."""
    path = binary_path()
    if not path or not uses(spec):
        return -1
    try:
        src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        data = b""
        while chunk := os.read(src, 1 << 16):
            data += chunk
    finally:
        os.close(src)
    if data[:4] != b"\x7fELF":
        return -1
    import fcntl

    flags = _MFD_CLOEXEC | _MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(NAME, flags | _MFD_EXEC)
    except OSError as e:
        if e.errno != _EINVAL:
            return -1
        fd = os.memfd_create(NAME, flags)             # before Linux 6.3
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        # Executable, not readable: an execve of an unreadable file leaves the process
        # non-dumpable (unless it can read anyway, CAP_DAC_OVERRIDE), closing the window
        # before the waiter's own PR_SET_DUMPABLE.
        os.fchmod(fd, 0o111)
        seals = _F_SEAL_SEAL | _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_WRITE
        try:
            fcntl.fcntl(fd, _F_ADD_SEALS, seals | _F_SEAL_EXEC)
        except OSError:
            fcntl.fcntl(fd, _F_ADD_SEALS, seals)      # F_SEAL_EXEC: Linux 6.3+
    except OSError:
        os.close(fd)
        return -1
    return fd


def argv(fifo_fd: int, proc: Process, program: tuple[bytes, int] | None,
         path: str) -> list[str]:
    """The waiter's argv (see waiter.c) for executing path with proc.args. Makes fifo_fd
    inheritable; program (seccomp BPF and flags, loaded by the waiter) goes in an inheritable
    memfd the waiter reads and closes before it waits. Call before the init reports "ready":
    errors still reach the runtime then."""
    cpus = proc.exec_cpu_affinity.final or "-"
    if cpus != "-":
        from pyoci.linux import process as procmod

        procmod.parse_cpu_list(cpus, "process.execCPUAffinity.final")  # fail now, not after start
    bpf, flags = "-", 0
    if program is not None:
        data, flags = program
        fd = os.memfd_create("pyoci-seccomp", 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        os.set_inheritable(fd, True)
        bpf = str(fd)
    os.set_inheritable(fifo_fd, True)
    return [NAME, str(fifo_fd), cpus, bpf, str(flags), path, *proc.args]


def execute(fd: int, args: list[str], env: dict[str, str]) -> None:
    """execveat(fd, "", AT_EMPTY_PATH): no /proc needed. Returns only if that failed (the
    caller then waits in Python); the program's memfd is closed then."""
    try:
        os.execve(fd, args, env)
    except OSError:
        pass
    if args[3] != "-":
        os.close(int(args[3]))
