"""Helpers shared by the tests (import from here, not from conftest: tests/lane has a
conftest of its own and the module name would be ambiguous)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(HERE)

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

PYOCI = os.path.join(REPO, ".venv", "bin", "pyoci")
if not os.path.exists(PYOCI):
    PYOCI = shutil.which("pyoci") or PYOCI
# The Python part of the command (setup.py): PYOCI runs it with its #! interpreter, -IS (where
# PYOCI could not be built, PYOCI is the script itself)
PYOCI_SCRIPT = PYOCI + "-script.py" if os.path.exists(PYOCI + "-script.py") else PYOCI

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def reap_zombies() -> None:
    """Reap any orphaned children reparented to this (subreaper) test process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Runtime:
    """Runs one runtime binary (pyoci, runc, crun) with a private --root."""

    def __init__(self, binary: str, root: str):
        self.binary = binary
        self.root = root
        self.name = os.path.basename(binary)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def __call__(self, *args: str, check: bool = False, timeout: float = 60, reap: bool = True,
                 **kw):
        """Run one command; its output is captured through files, not pipes: a container
        created by it inherits stdio and would hold a pipe open long after the command."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            kw.setdefault("stdout", out)
            kw.setdefault("stderr", err)
            p = subprocess.run(self.argv(*args), timeout=timeout, **kw)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode,
                                            out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        if reap:
            reap_zombies()
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} exited {r.returncode}: "
                                 f"{r.stderr}")
        return r

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid, check=True).stdout)

    def cleanup(self) -> None:
        if not os.path.isdir(self.root):
            return
        for cid in os.listdir(self.root):
            try:
                self("delete", "--force", cid, timeout=30)
            except Exception:
                pass
        reap_zombies()
        shutil.rmtree(self.root, ignore_errors=True)




def kill_and_reap(pid: int) -> None:
    """SIGKILL a child this test started and wait for it (gone already is fine)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class ChildError(Exception):
    """An exception raised by fn in in_child, re-raised in the test process."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def in_child(fn, *args):
    """Run fn(*args) in a forked child and return its JSON result; an exception in the
    child is raised here as ChildError. The child always leaves with os._exit."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            try:
                out = {"ok": fn(*args)}
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = {"error": type(e).__name__, "message": str(e)}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0, "child failed to report"
    out = json.loads(raw)
    if "error" in out:
        raise ChildError(out["error"], out["message"])
    return out["ok"]
