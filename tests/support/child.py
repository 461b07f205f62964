"""Forked children for the tests, one implementation of each kind:

- run_child / in_child: call a function in a forked child (optionally in new namespaces) and
  get back what it returned, as JSON, or what it raised, as ChildError;
- idle_child: a child that only waits, for tests that act on another process;
- access_in_cgroup: which device opens and mknods a child in a cgroup is allowed.

A child always leaves with os._exit (never through pytest's code) and is reaped here."""

from __future__ import annotations

import contextlib
import errno as errno_mod
import json
import os
import resource
import select
import signal
import socket
import stat
import time
import traceback

from pyoci.linux import syscalls as sc
from support.procs import kill_and_reap


class ChildError(AssertionError):
    """What the function raised in the child: kind (its class name), message, errno and the
    child's traceback."""

    def __init__(self, kind: str, message: str, errno: int | None = None, tb: str = ""):
        super().__init__(f"{kind}: {message}" + (f"\n{tb}" if tb else ""))
        self.kind = kind
        self.message = message
        self.errno = errno
        self.traceback = tb


def run_child(fn, *args, cgroup: str | None = None, userns: bool = False, unshare: int = 0,
              before=None, fds_from=None, no_core: bool = False, timeout: float = 60):
    """Fork and call fn(*args) in the child; return (wait status, what fn returned), the value
    None when the child died without reporting (killed by a signal, or fn called os._exit).
    What fn raised is raised here as ChildError.

    In the child, in this order: no_core makes it unable to dump core (for children a
    signal kills); it moves into the cgroup directory `cgroup`; before() runs, still with
    the host's privileges; userns unshares a user namespace, whose ids 0-65535 the parent
    maps to the same host ids; `unshare` (CLONE_* flags) is unshared; when fds_from is
    given, the parent calls fds_from(child pid) once the user namespace exists and fn gets
    the fds it returned as one more argument. fn's value travels back as JSON. A child that
    has not reported within timeout seconds is killed and the test fails."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    sock_parent, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for fd in (r, ready_r, go_w):
                os.close(fd)
            sock_parent.close()
            try:
                if no_core:
                    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                    sc.prctl(sc.PR_SET_DUMPABLE, 0)
                if cgroup is not None:
                    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                        f.write("0")
                if before is not None:
                    before()
                if userns:
                    sc.unshare(sc.CLONE_NEWUSER)
                os.write(ready_w, b"1")
                if os.read(go_r, 1) != b"1":
                    raise RuntimeError("the parent did not release the child")
                if unshare:
                    sc.unshare(unshare)
                if fds_from is not None:
                    _, fds, _, _ = socket.recv_fds(sock_child, 1, 16)
                    args = (*args, fds)
                report = {"ok": fn(*args)}
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                report = {"error": type(e).__name__, "message": str(e),
                          "errno": getattr(e, "errno", None), "tb": traceback.format_exc()}
            try:
                data = json.dumps(report).encode()
            except (TypeError, ValueError) as e:
                data = json.dumps({"error": "TypeError", "tb": "", "errno": None,
                                   "message": f"the child's result is not JSON: {e}"}).encode()
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    for fd in (w, ready_w, go_r):
        os.close(fd)
    sock_child.close()
    deadline = time.monotonic() + timeout
    sent: list[int] = []
    timed_out = False
    try:
        ready = _read(ready_r, 1, deadline)
        if ready == b"1":     # else it died (or failed in before()) and says why below
            if userns:
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{pid}/{name}", "w") as f:
                        f.write("0 0 65536\n")
            if fds_from is not None:
                sent = fds_from(pid)
            os.write(go_w, b"1")
            if fds_from is not None:
                socket.send_fds(sock_parent, [b"x"], sent)
        chunks = []
        while chunk := _read(r, 65536, deadline):
            chunks.append(chunk)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    finally:
        for fd in (r, ready_r, go_w, *sent):
            os.close(fd)
        sock_parent.close()
        _, status = os.waitpid(pid, 0)
    if timed_out:
        raise AssertionError(f"the child {pid} did not report within {timeout} s (killed)")
    if not chunks:
        return status, None
    report = json.loads(b"".join(chunks))
    if "error" in report:
        raise ChildError(report["error"], report["message"], report["errno"], report["tb"])
    return status, report["ok"]


def in_child(fn, *args, **kw):
    """run_child for a child that must report and exit 0: what fn returned."""
    status, value = run_child(fn, *args, **kw)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed to report: {status:#x}"
    return value


def _read(fd: int, n: int, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise TimeoutError
    return os.read(fd, n)


@contextlib.contextmanager
def idle_child():
    """A forked child that waits (all signals unblocked) until it is killed: yields its pid,
    then kills and reaps it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            while True:
                signal.pause()
        finally:
            os._exit(0)
    try:
        yield pid
    finally:
        kill_and_reap(pid)


def access_in_cgroup(cgroup: str, actions: list[tuple[str, str, int]]) -> dict[str, str]:
    """Run actions in a child moved into cgroup: ("open", path, flags) or ("mknod", path,
    rdev); return {"KIND PATH ARG": "ok" or the errno's name}, in the actions' order."""
    def run() -> dict[str, str]:
        out = {}
        for kind, path, arg in actions:
            label = f"{kind} {path} {arg}"
            try:
                if kind == "open":
                    os.close(os.open(path, arg))
                else:
                    os.mknod(path, 0o600 | stat.S_IFCHR, arg)
                    os.unlink(path)
                out[label] = "ok"
            except OSError as e:
                out[label] = errno_mod.errorcode.get(e.errno or 0, str(e.errno))
        return out
    return in_child(run, cgroup=cgroup)
