"""A process run in the foreground (`pyoci run`, `pyoci exec` without --detach): the signals
the caller gets are forwarded to it, and its exit status becomes ours."""

from __future__ import annotations

import _signal   # not `signal`: it imports enum (milliseconds on every `run`)
import os

from pyoci.linux.child import signal_numbers as _signals

NOT_FORWARDED = {_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD, _signal.SIGWINCH,
                 _signal.SIGTTIN, _signal.SIGTTOU}


class Forwarder:
    """Forward the signals we get to the process (queued until its pid is known);
    restore() puts the previous handlers back."""

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self.old: dict[int, object] = {}
        for s in _signals():
            if s in NOT_FORWARDED:
                continue
            try:
                self.old[s] = _signal.signal(s, self._on_signal)
            except (OSError, ValueError):
                pass

    def _on_signal(self, n: int, _frame: object) -> None:
        if self.pid:
            _kill(self.pid, n)
        else:
            self.pending.append(n)

    def to(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            _kill(pid, self.pending.pop(0))

    def restore(self) -> None:
        for s, h in self.old.items():
            try:
                _signal.signal(s, h)
            except (OSError, ValueError, TypeError):
                pass
        self.old = {}


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_exit(pid: int) -> int:
    """Wait for pid (reaping whatever else is reparented to us, a subreaper); its exit code,
    128+N if it was killed by signal N."""
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if wpid == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.waitstatus_to_exitcode(status)
