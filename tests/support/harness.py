"""Helpers shared by the tests (import from here, not from conftest: tests/lane has a
conftest of its own and the module name would be ambiguous): the runtime under test (PYOCI),
Runtime, which runs a runtime's commands, and support.procs' reap_zombies and kill_and_reap.
Importing it makes the test process a subreaper."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from support.procs import kill_and_reap as kill_and_reap  # the tests take both from here
from support.procs import reap_zombies as reap_zombies
from support.procs import set_subreaper

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(HERE)

set_subreaper()   # every test process reaps the container processes it orphans

PYOCI = os.path.join(REPO, ".venv", "bin", "pyoci")
if not os.path.exists(PYOCI):
    PYOCI = shutil.which("pyoci") or PYOCI
# The Python part of the command (setup.py): PYOCI runs it with its #! interpreter, -IS (where
# PYOCI could not be built, PYOCI is the script itself)
PYOCI_SCRIPT = PYOCI + "-script.py" if os.path.exists(PYOCI + "-script.py") else PYOCI

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


class Hang(AssertionError):
    """A runtime command that did not end within its timeout (it was killed)."""


def short_argv(argv) -> list[str]:
    """argv (str or bytes items) for a message: long arguments cut."""
    return [a if len(a) < 120 else a[:60] + f"...({len(a)})" for a in
            (x if isinstance(x, str) else x.decode(errors="replace") for x in argv)]


class Result(subprocess.CompletedProcess):
    """What one runtime command did: a CompletedProcess (args, returncode, stdout and stderr
    as text) with its duration in seconds (elapsed); rc, out and err are short names."""

    def __init__(self, args, returncode: int, stdout: str, stderr: str, elapsed: float = 0.0):
        super().__init__(args, returncode, stdout, stderr)
        self.elapsed = elapsed

    @property
    def rc(self) -> int:
        return self.returncode

    @property
    def out(self) -> str:
        return self.stdout

    @property
    def err(self) -> str:
        return self.stderr

    def __repr__(self) -> str:
        return (f"Result(argv={short_argv(self.args)}, rc={self.returncode}, "
                f"stderr={self.stderr[:1000]!r}, stdout={self.stdout[:500]!r})")


class Runtime:
    """Runs one runtime binary (pyoci, runc, crun) with a private --root (none when root is
    None) and global flags (["--systemd-cgroup"]...) before each command."""

    def __init__(self, binary: str, root: str | None, name: str | None = None,
                 flags: list[str] | tuple[str, ...] = ()):
        self.binary = binary
        self.root = root
        self.name = name or os.path.basename(binary)
        self.flags = list(flags)

    def argv(self, *args) -> list:
        root = ["--root", self.root] if self.root is not None else []
        return [self.binary, *root, *self.flags, *args]

    def __call__(self, *args, check: bool = False, timeout: float = 60, reap: bool = True,
                 **kw) -> Result:
        """Run one command (str or bytes arguments) and wait for it. Its output is captured
        through files, not pipes: a container created by it inherits stdio and would hold a
        pipe open long after the command. A command still running after timeout seconds is
        killed: Hang. reap=False leaves exited orphans alone (a waitpid(-1) in one thread
        could take another thread's child); check=True fails on a non-zero exit. kw go to
        subprocess.run (stdin defaults to /dev/null)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        argv = self.argv(*args)
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            kw.setdefault("stdout", out)
            kw.setdefault("stderr", err)
            try:
                p = subprocess.run(argv, timeout=timeout, **kw)
            except subprocess.TimeoutExpired:    # run() has killed and waited for it
                if reap:
                    reap_zombies()
                raise Hang(f"hang: {short_argv(argv)} did not end within {timeout} s") from None
            elapsed = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            r = Result(p.args, p.returncode, out.read().decode(errors="replace"),
                       err.read().decode(errors="replace"), elapsed)
        if reap:
            reap_zombies()
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(short_argv(args))} exited "
                                 f"{r.returncode}: {r.stderr}")
        return r

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid, check=True).stdout)

    def cleanup(self) -> None:
        """delete --force every container under root, then remove root."""
        if self.root is None or not os.path.isdir(self.root):
            return
        for cid in os.listdir(self.root):
            try:
                self("delete", "--force", cid, timeout=30)
            except Exception:
                pass
        reap_zombies()
        shutil.rmtree(self.root, ignore_errors=True)
