"""Helpers of every process pyoci starts inside a container (the init, an exec'd process)
before its execve (pyoci.linux.process.execute): report errors to the runtime as one line,
close inherited fds, become root in a user namespace, build the environment, resolve the
executable, and keep only stdio and the preserved fds across the execve."""

from __future__ import annotations

import errno
import os

from pyoci import TYPE_CHECKING
from pyoci.errors import PyociError, SysError, why
from pyoci.linux import syscalls as sc

if TYPE_CHECKING:
    from pyoci.spec.config import Process


def signal_numbers() -> list[int]:
    """Every signal signal.Signals lists (1-31, SIGRTMIN, SIGRTMAX), by number."""
    import _signal

    return sorted({v for k, v in vars(_signal).items()
                   if k.startswith("SIG") and not k.startswith("SIG_") and type(v) is int})


def default_signals(also: tuple[int, ...] = ()) -> None:
    """Drop the runtime's handlers (a foreground run's or exec's forwarding, Python's
    SIGINT), and SIGPIPE, SIGXFSZ (ignored by Python) and `also` back to SIG_DFL even when
    ignored: an ignored signal stays ignored across execve. (Here rather than with
    pyoci.foreground's forwarding: the init of a `create` never loads that module.)"""
    import _signal

    force = {_signal.SIGPIPE, _signal.SIGXFSZ, *also}
    for s in signal_numbers():  # the numbers of signal.Signals
        if s in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            if s in force or callable(_signal.getsignal(s)):
                _signal.signal(s, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def error_message(e: BaseException) -> str:
    """One line describing e, for the runtime to report."""
    if isinstance(e, PyociError):
        msg = str(e)
    elif isinstance(e, OSError):
        if e.filename:
            msg = f"{e.filename}: {e.strerror}"
        elif e.args and isinstance(e.args[-1], str):
            msg = e.args[-1]
        else:
            msg = f"{e.strerror or e}"
    else:
        msg = f"{type(e).__name__}: {e}"
    return msg.splitlines()[0] if msg else type(e).__name__


def close_fds_except(keep: set[int], preserve: int = 0) -> None:
    """Close every open fd but stdio, the preserved fds 3..3+preserve-1 and those in keep
    (the caller's strays, state files, locks go)."""
    keep = keep | {0, 1, 2} | set(range(3, 3 + preserve))
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def reopen_dev_null() -> None:
    """Stdio that is the null device (the caller's /dev/null, on a mount outside the
    container) becomes the container's own /dev/null, as runc's reOpenDevNull: then nothing
    of the host's mounts is open in the container (CRIU refuses to dump such a file)."""
    try:
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"reopen /dev/null in the container: {e.strerror}") from None
    try:
        null = os.fstat(fd)
        for n in range(3):
            try:
                st = os.fstat(n)
            except OSError:
                continue
            if st.st_rdev == null.st_rdev and (st.st_dev, st.st_ino) != (null.st_dev,
                                                                          null.st_ino):
                os.dup2(fd, n, inheritable=True)
    finally:
        os.close(fd)


def become_root(what: str) -> None:
    """setres[ug]id(0) after entering a user namespace (0 must be mapped)."""
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        raise SysError(f"{what}: cannot become root in the user namespace: "
                       f"{e.strerror}") from None


def env_dict(items: list[str]) -> dict[str, str]:
    """K=V strings as a dict (the last of a repeated key wins; items without "=" dropped)."""
    env: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if sep:
            env[k] = v
    return env


def process_env(proc: Process, extra: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """process.env (+ extra K=V) as a dict, with HOME from the container's /etc/passwd."""
    from pyoci.linux import process as procmod

    env = env_dict(proc.env + list(extra))
    if "HOME" not in env:
        env["HOME"] = procmod.home_dir(int(proc.user.uid))
    return env


def errno_text(err: int | OSError) -> str:
    """An errno's (or an OSError's) text as Go (runc) prints it, lower case: "no such file
    or directory".
    Clients match it: podman and docker choose exit code 127 or 126 from a runtime's
    "no such file or directory", "executable file not found in" or "permission denied"
    (docker case-sensitively)."""
    s = why(err) if isinstance(err, OSError) else os.strerror(err)
    return s[:1].lower() + s[1:]


def _go_quote(s: str) -> str:
    """s quoted as Go's %q does for printable text."""
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in out) + '"'


def _why_not_executable(path: str) -> str | None:
    """None if path is an executable file for this process, else why not in the words of
    Go's exec.LookPath (runc 1.1): "stat PATH: <errno>" or "permission denied" (also for a
    directory)."""
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        return f"stat {path}: {errno_text(e)}"
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111 or not os.access(path, os.X_OK):
        return errno_text(errno.EACCES)
    return None


def find_executable(arg0: str, env: dict[str, str]) -> str:
    """process.args[0] resolved in the container (PATH of the process's environment), so a
    missing binary is an error before the process is reported started, worded as runc's
    (Go's exec.LookPath): 'exec: "/x": stat /x: no such file or directory',
    'exec: "/etc/passwd": permission denied', 'exec: "x": executable file not found in
    $PATH'."""
    if "/" in arg0:
        why = _why_not_executable(arg0)
        if why is None:
            return arg0
        raise SysError(f"process.args[0]: exec: {_go_quote(arg0)}: {why}")
    for d in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        c = os.path.join(d or ".", arg0)
        if _why_not_executable(c) is None:
            return c
    raise SysError(f"process.args[0]: exec: {_go_quote(arg0)}: executable file not found "
                   f"in $PATH")


def keep_fds_across_exec(extra: int) -> None:
    """Only stdio and fds 3..3+extra-1 survive the execve: everything else is marked
    close-on-exec, so no host fd (a directory, a state file) leaks into the container."""
    keep = 3 + extra
    for fd in range(3, keep):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    sc.close_range(keep, 0xFFFFFFFF, 4)   # CLOSE_RANGE_CLOEXEC
