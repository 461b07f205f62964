"""The shim is a child subreaper: the containers' init and exec processes are reparented to
it when the `pyoci` command that made them exits. One thread reaps every child
(waitpid(-1)) and hands each exit status to whoever watches that pid: the commands the shim
runs (`run`) and the container processes (`watch`). A status that arrives before anyone
watches its pid (a process that dies at once, before its pid file is read) is kept for a
while and delivered when the watch comes.

Commands are started with posix_spawn (no subprocess: its import and its own waitpid calls
would both cost here); their output is captured in memfds."""

from __future__ import annotations

import fcntl
import os
import threading
import time

from pyoci import TYPE_CHECKING
from pyoci.linux import syscalls as sc

if TYPE_CHECKING:
    from collections.abc import Callable

UNCLAIMED_TTL = 300.0  # seconds an unwatched exit status is kept (orphans nobody asks for)


def exit_code(status: int) -> int:
    """A wait status as containerd reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self) -> None:
        sc.set_child_subreaper()
        self.lock = threading.Lock()
        self.watchers: dict[int, Callable[[int, float], object]] = {}
        self.unclaimed: dict[int, tuple[int, float, float]] = {}
        self.children = threading.Event()
        threading.Thread(target=self._loop, name="reaper", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self.children.wait(1.0)
                self.children.clear()
                continue
            except InterruptedError:
                continue
            self._deliver(pid, exit_code(status), time.time())

    def _deliver(self, pid: int, code: int, when: float) -> None:
        with self.lock:
            cb = self.watchers.pop(pid, None)
            if cb is None:
                now = time.monotonic()
                self.unclaimed = {p: v for p, v in self.unclaimed.items()
                                  if now - v[2] < UNCLAIMED_TTL}
                self.unclaimed[pid] = (code, when, now)
                return
        cb(code, when)

    def watch(self, pid: int, callback: Callable[[int, float], object]) -> None:
        """callback(exit code, exit time) once pid has exited (at once if it already has).
        It runs on the reaper thread: it must not wait for another child."""
        with self.lock:
            got = self.unclaimed.pop(pid, None)
            if got is None:
                self.watchers[pid] = callback
                return
        callback(got[0], got[1])

    def spawn(self, argv: list[str], fds: dict[int, int], env: dict | None = None,
              setsid: bool = False) -> int:
        """Start argv with fds {child fd: our fd} (0, 1, 2 default to /dev/null); nothing
        else is inherited (the shim's fds are close-on-exec). Collect it with wait()."""
        actions = []
        null = None
        try:
            for target in (0, 1, 2):
                if target not in fds:
                    if null is None:
                        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                    fds = {**fds, target: null}
            # copies above every target first: no dup2 overwrites a source still to be used
            high = {t: fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, 64) for t, f in fds.items()}
            try:
                actions = [(os.POSIX_SPAWN_DUP2, f, t) for t, f in sorted(high.items())]
                pid = os.posix_spawn(argv[0], argv, os.environ if env is None else env,
                                     file_actions=actions, setsid=setsid)
            finally:
                for f in high.values():
                    os.close(f)
        finally:
            if null is not None:
                os.close(null)
        self.children.set()
        return pid

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        done = threading.Event()
        result = []

        def exited(code: int, when: float) -> None:
            result.append(code)
            done.set()

        self.watch(pid, exited)
        if not done.wait(timeout):
            return None
        return result[0]

    def _exit_code(self, pid: int) -> int:
        """wait() without a timeout: the exit code of pid, once it has exited."""
        code = self.wait(pid)
        assert code is not None   # only a timeout gives None
        return code

    def run(self, argv: list[str], input: bytes | None = None,
            stdio: list[int] | None = None, env: dict | None = None) -> tuple[int, bytes, bytes]:
        """Run a command to its end: (exit code, stdout, stderr). Without stdio, its output
        is captured in memfds (a container may inherit the command's stdio and outlive it:
        a pipe would never end) and input, if any, is its stdin."""
        if stdio is not None:
            return self._exit_code(self.spawn(argv, dict(enumerate(stdio)), env)), b"", b""
        out = os.memfd_create("out", os.MFD_CLOEXEC)
        err = os.memfd_create("err", os.MFD_CLOEXEC)
        inp = None
        try:
            fds = {1: out, 2: err}
            if input is not None:
                inp = os.memfd_create("in", os.MFD_CLOEXEC)
                os.write(inp, input)
                os.lseek(inp, 0, os.SEEK_SET)
                fds[0] = inp
            code = self._exit_code(self.spawn(argv, fds, env))
            return code, _read_all(out), _read_all(err)
        finally:
            for fd in (out, err, inp):
                if fd is not None:
                    os.close(fd)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
