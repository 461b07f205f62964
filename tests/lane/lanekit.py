"""Helpers for the lane tests: runtimes with private roots, cgroup2 readers, create/wait."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from support.harness import Runtime

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CGROUP_ROOT = "/sys/fs/cgroup"
PYOCI = os.path.join(REPO, ".venv", "bin", "pyoci")
PARENT = "pyoci-lane"  # cgroupfs parent of every test container's cgroup


def cgroup2_controllers() -> set[str]:
    try:
        with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


IN_LANE = "memory" in cgroup2_controllers()
SYSTEMD_PID1 = os.path.isdir("/run/systemd/system")


def runtime_binary(name: str) -> str | None:
    if name == "pyoci":
        return PYOCI if os.path.exists(PYOCI) else shutil.which("pyoci")
    return shutil.which(name)


def make_runtime(name: str, systemd: bool = False):
    binary = runtime_binary(name)
    if not binary:
        pytest.skip(f"{name} is not installed")
    return Runtime(binary, tempfile.mkdtemp(prefix=f"lane-{name}-root-"), name=name,
                   flags=["--systemd-cgroup"] if systemd else [])


def remove_cgroup_tree(path: str) -> None:
    """rmdir a cgroup and its (empty) descendants, deepest first; leaves busy ones."""
    if not os.path.isdir(path):
        return
    for root, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(root)
        except OSError:
            pass


def cgroup_of(pid: int) -> str:
    """The cgroup2 directory of pid."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return CGROUP_ROOT + line[3:].strip()
    raise AssertionError(f"pid {pid} has no cgroup2 entry")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def keyed(path: str) -> dict[str, str]:
    """A flat-keyed cgroup file (memory.events, pids.events, cgroup.events)."""
    out = {}
    for line in read(path).splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def create(rt: Runtime, bundle: str, cid: str, log_dir: str) -> str:
    """`create` the container with its stdio in files (a pipe would block create until the
    container exits); returns its cgroup directory."""
    with open(os.path.join(log_dir, f"{cid}.out"), "w") as out, \
            open(os.path.join(log_dir, f"{cid}.err"), "w") as err:
        r = rt("create", "--bundle", bundle, cid, stdout=out, stderr=err)
    if r.returncode != 0:
        raise AssertionError(f"{rt.name} create exited {r.returncode}: "
                             f"{read(os.path.join(log_dir, cid + '.err'))}")
    return cgroup_of(rt.state(cid)["pid"])


def output(log_dir: str, cid: str) -> tuple[str, str]:
    return read(os.path.join(log_dir, f"{cid}.out")), read(os.path.join(log_dir, f"{cid}.err"))


def wait_stopped(rt: Runtime, cid: str, deadline_s: float = 120) -> None:
    """Poll `state` until the container has stopped (the deadline only guards against a hang)."""
    end = time.monotonic() + deadline_s
    while rt.state(cid)["status"] != "stopped":
        if time.monotonic() > end:
            raise AssertionError(f"{rt.name}: container {cid} still running after {deadline_s}s")
        time.sleep(0.1)
