"""Process bookkeeping shared by the tests, the conformance suite (conformance/ocisuite) and
the benchmarks (bench/): becoming the subreaper of orphaned container processes, reaping them,
killing a child. No side effect at import (support.harness makes the test process a
subreaper when imported)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (container inits)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_zombies() -> None:
    """Reap, without blocking, every child that has exited: orphans reparented to this
    subreaper (container processes, client shims) included."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child this process started and wait for it (gone already is fine)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
