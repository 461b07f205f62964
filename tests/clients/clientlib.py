"""Helpers for the client tests: runtimes by name, running client commands, cgroup files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts", "clients"))
if os.path.join(REPO, "tests") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "tests"))

import daemons  # noqa: E402
import image  # noqa: E402,F401 - conftest.py takes it from here
from support.procs import reap_zombies  # noqa: E402

PYOCI = os.path.join(REPO, ".venv", "bin", "pyoci")
if not os.path.exists(PYOCI):
    PYOCI = shutil.which("pyoci") or PYOCI
RUNTIMES = {"runc": daemons.RUNC, "pyoci": PYOCI}
TIMEOUT = 180  # a hang guard for one client command, not a performance expectation


def needs(*binaries: str, package: str):
    missing = [b for b in binaries if not shutil.which(b) and not os.path.exists(b)]
    return pytest.mark.skipif(bool(missing) or os.geteuid() != 0,
                              reason=f"needs root and {', '.join(missing) or 'nothing'} "
                                     f"(Debian package {package})")


def sh(argv: list[str], env: dict | None = None, stdin: str | None = None,
       timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a client command; output through files (a container may inherit our stdio)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin.encode())
            inp.seek(0)
        p = subprocess.run(argv, stdin=inp, stdout=out, stderr=err, env=env, timeout=timeout)
        out.seek(0)
        err.seek(0)
        reap_zombies()
        return subprocess.CompletedProcess(argv, p.returncode,
                                           out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))


def ok(argv: list[str], env: dict | None = None, **kw) -> str:
    r = sh(argv, env, **kw)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}: {r.stderr}"
    return r.stdout


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """The host path of a file in the v1 `controller` cgroup of process pid."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{ctrls}{path}/{name}"
    raise LookupError(f"no {controller} cgroup for {pid}")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
