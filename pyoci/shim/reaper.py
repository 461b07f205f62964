"""The shim is a child subreaper: the containers' init and exec processes are reparented to
it when the `pyoci` command that made them exits. One thread reaps every child
(waitpid(-1)) and hands each exit status to whoever watches that pid: the commands the shim
runs (`run`) and the container processes (`watch`). A status that arrives before anyone
watches its pid (a process that dies at once, before its pid file is read) is kept for a
while and delivered when the watch comes."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time

from pyoci.linux import syscalls as sc

UNCLAIMED_TTL = 300.0  # seconds an unwatched exit status is kept (orphans nobody asks for)


def exit_code(status: int) -> int:
    """A wait status as containerd reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self) -> None:
        sc.set_child_subreaper()
        self.lock = threading.Lock()
        self.watchers: dict[int, object] = {}
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

    def watch(self, pid: int, callback) -> None:
        """callback(exit code, exit time) once pid has exited (at once if it already has).
        It runs on the reaper thread: it must not wait for another child."""
        with self.lock:
            got = self.unclaimed.pop(pid, None)
            if got is None:
                self.watchers[pid] = callback
                return
        callback(got[0], got[1])

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """Popen whose exit the reaper collects: wait for it with wait(), never p.wait()."""
        p = subprocess.Popen(argv, **kw)
        self.children.set()
        return p

    def wait(self, p: subprocess.Popen, timeout: float | None = None) -> int | None:
        done = threading.Event()
        result = []

        def exited(code: int, when: float) -> None:
            result.append(code)
            done.set()

        self.watch(p.pid, exited)
        if not done.wait(timeout):
            return None
        p.returncode = result[0]
        return result[0]

    def run(self, argv: list[str], input: bytes | None = None, stdin=None, stdout=None,
            stderr=None, pass_fds=(), env=None) -> tuple[int, bytes, bytes]:
        """Run a command to its end: (exit code, stdout, stderr), output through temporary
        files (a container may inherit the command's stdio and outlive it)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if input is not None:
                inp = tempfile.TemporaryFile()
                inp.write(input)
                inp.seek(0)
                stdin = inp
            try:
                p = self.spawn(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                               stdout=stdout if stdout is not None else out,
                               stderr=stderr if stderr is not None else err,
                               pass_fds=pass_fds, env=env, close_fds=True)
            finally:
                if input is not None:
                    inp.close()
            code = self.wait(p)
            out.seek(0)
            err.seek(0)
            return code, out.read(), err.read()
