"""A `create`, `run` or `exec` killed with SIGKILL at any stage leaves a container that
`state` and `list` show and `delete --force` removes whole: state directory, cgroups,
processes, mounts (issue 11, section 3).

The stages are pyoci's fault points (PYOCI_FAULT=STAGE: pyoci SIGKILLs itself there;
STAGE:stop: SIGSTOPs itself); one test kills `create` from a createRuntime hook instead,
which needs no fault point. Every process a test starts is killed and reaped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from pyoci.cgroups import paths
from support.harness import IS_ROOT, reap_zombies

pytestmark = pytest.mark.skipif(not IS_ROOT or not os.path.isdir("/sys/fs/cgroup"),
                                reason="needs root and cgroups")

CREATE_STAGES = ["create:forked", "create:dir", "create:recorded", "create:cgroup",
                 "create:pid", "create:init-cgroup", "create:cgroup-sent", "create:hooks",
                 "create:ready", "create:saved"]
EXEC_STAGES = ["exec:forked", "exec:joined", "exec:pid", "exec:go"]


def _children(zombies: bool = False) -> set[int]:
    """Processes whose parent is this (subreaper) test process: live ones, or zombies."""
    me = os.getpid()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == me and (rest[0] in ("Z", "X")) == zombies:
            out.add(int(name))
    return out


def _delete_force(rt, cid: str) -> subprocess.CompletedProcess:
    """`delete --force`, reaping meanwhile what is reparented to this test (a real caller's
    subreaper does: the init of a PID namespace waits for its killed members' reaping)."""
    p = subprocess.Popen(rt.argv("delete", "--force", cid), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while p.poll() is None:
        for pid in _children(zombies=True) - {p.pid}:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.01)
    err = p.stderr.read().decode()
    p.stderr.close()
    return subprocess.CompletedProcess(p.args, p.returncode, "", err)


def _mounts(*where: str) -> list[str]:
    """Mounts of this (the host's) mount namespace under the test's directories."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f.read().splitlines()
                if any(f" {w}" in line for w in where)]


def _cgroups(cid: str) -> list[str]:
    """The container's default cgroup directories that exist."""
    own = paths.own_cgroups()
    out = []
    for sub, m in paths.v1_mounts().items():
        out.append(paths.resolve(m, own.get(sub), cid))
    u = paths.unified_mount()
    if u is not None:
        out.append(paths.resolve(u, own.get(""), cid))
    return sorted({d for d in out if os.path.isdir(d)})


def _stale_warmups() -> list[str]:
    """Scratch cgroups of pyoci's warm-up (pyoci/warmup.py) whose process is gone."""
    u = paths.unified_mount()
    if u is None:
        return []
    base = paths.resolve(u, paths.own_cgroups().get(""), ".")
    out = []
    for name in os.listdir(base):
        if name.startswith("pyoci-warmup-") and not os.path.exists(f"/proc/{name[13:]}"):
            out.append(name)
    return out


class Snapshot:
    def __init__(self, *where: str) -> None:
        reap_zombies()
        self.children = _children()
        self.where = where

    def leftovers(self, rt, cid: str) -> dict:
        """What is left of the container; waits (bounded) for killed processes to go.
        A killed create's warm-up scratch cgroup goes with the next create/run/exec."""
        rt("exec", "no-such-container", "true")
        deadline = time.monotonic() + 15
        while True:
            reap_zombies()
            left = {"state": os.path.exists(os.path.join(rt.root, cid)),
                    "cgroups": _cgroups(cid),
                    "processes": sorted(_children() - self.children),
                    "mounts": _mounts(rt.root, *self.where),
                    "warmup": _stale_warmups()}
            if not any(left.values()) or time.monotonic() > deadline:
                return {k: v for k, v in left.items() if v}
            time.sleep(0.05)


def _killed(r) -> None:
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)


def _check_shown(rt, cid: str, stage: str, allowed: tuple[str, ...]) -> str:
    """`state` and `list` show the container; returns its status."""
    r = rt("state", cid)
    assert r.returncode == 0, (stage, r.stderr)
    status = json.loads(r.stdout)["status"]
    assert status in allowed, (stage, status)
    r = rt("list", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert cid in [c["id"] for c in json.loads(r.stdout) or []], (stage, r.stdout)
    return status


def _env(stage: str) -> dict:
    return dict(os.environ, PYOCI_FAULT=stage)


@pytest.fixture
def sleeper(bundle_factory, config):
    config["process"]["args"] = ["sleep", "600"]
    return bundle_factory(config)


@pytest.mark.parametrize("stage", CREATE_STAGES)
@pytest.mark.parametrize("cmd", ["create", "run-d"])
def test_killed_create_is_shown_and_deleted_whole(pyoci, sleeper, stage, cmd):
    cid = "crash-" + cmd
    snap = Snapshot(os.path.dirname(sleeper))
    argv = ["create"] if cmd == "create" else ["run", "-d"]
    _killed(pyoci(*argv, "--bundle", sleeper, cid, env=_env(stage)))
    if stage == "create:forked":
        # nothing is made yet but the bootstrap child, which leaves on its own (EOF)
        assert pyoci("state", cid).returncode == 1
    else:
        status = _check_shown(pyoci, cid, stage, ("creating", "stopped", "created"))
        assert (status == "created") == (stage == "create:saved")
    r = _delete_force(pyoci, cid)
    assert r.returncode == 0, r.stderr
    assert snap.leftovers(pyoci, cid) == {}
    assert pyoci("state", cid).returncode == 1


@pytest.mark.parametrize("stage, detach", [("run:created", True), ("run:created", False),
                                           ("run:started", False)],
                         ids=["created-detached", "created-foreground", "started-foreground"])
def test_killed_run_is_shown_and_deleted_whole(pyoci, sleeper, stage, detach):
    cid = "crash-run"
    snap = Snapshot(os.path.dirname(sleeper))
    argv = ["run", "-d"] if detach else ["run"]
    _killed(pyoci(*argv, "--bundle", sleeper, cid, env=_env(stage)))
    _check_shown(pyoci, cid, stage, ("created",) if stage == "run:created" else ("running",))
    r = _delete_force(pyoci, cid)
    assert r.returncode == 0, r.stderr
    assert snap.leftovers(pyoci, cid) == {}


@pytest.mark.parametrize("stage", EXEC_STAGES)
def test_killed_exec_leaves_nothing_delete_force_misses(pyoci, sleeper, stage):
    cid = "crash-exec"
    snap = Snapshot(os.path.dirname(sleeper))
    pyoci("run", "-d", "--bundle", sleeper, cid, check=True)
    _killed(pyoci("exec", cid, "sleep", "500", env=_env(stage)))
    _check_shown(pyoci, cid, stage, ("running",))
    r = pyoci("exec", cid, "true")          # the container still works
    assert r.returncode == 0, r.stderr
    r = _delete_force(pyoci, cid)
    assert r.returncode == 0, r.stderr
    assert snap.leftovers(pyoci, cid) == {}


def test_stopped_create_is_creating_and_its_id_is_taken(pyoci, sleeper):
    """While create is under way, `state` says "creating" (with the init's pid once it is
    known), `list` shows it, a second create of the id is refused, and delete without
    --force refuses it once its create is gone."""
    cid = "crash-stop"
    snap = Snapshot(os.path.dirname(sleeper))
    p = subprocess.Popen(pyoci.argv("create", "--bundle", sleeper, cid),
                         env=_env("create:pid:stop"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with open(f"/proc/{p.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert time.monotonic() < deadline, "create did not reach create:pid"
            time.sleep(0.01)
        st = pyoci.state(cid)
        assert st["status"] == "creating" and st["pid"] > 0
        assert _check_shown(pyoci, cid, "stop", ("creating",)) == "creating"
        r = pyoci("create", "--bundle", sleeper, cid)
        assert r.returncode == 1 and "exists" in r.stderr
    finally:
        p.kill()
        p.wait()
    assert pyoci.state(cid)["status"] in ("creating", "stopped")
    r = _delete_force(pyoci, cid)
    assert r.returncode == 0, r.stderr
    assert snap.leftovers(pyoci, cid) == {}


def test_create_killed_by_a_hook_is_deleted_whole(pyoci, bundle_factory, config):
    """No fault point: a createRuntime hook SIGKILLs `pyoci create` (its parent) once the
    init, its cgroups and its namespaces exist."""
    config["process"]["args"] = ["sleep", "600"]
    config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]}
    b = bundle_factory(config)
    cid = "crash-hook"
    snap = Snapshot(os.path.dirname(b))
    _killed(pyoci("create", "--bundle", b, cid))
    assert _cgroups(cid)                      # what a killed create leaves...
    _check_shown(pyoci, cid, "hook", ("creating", "stopped"))
    r = _delete_force(pyoci, cid)       # ...and delete --force removes
    assert r.returncode == 0, r.stderr
    assert snap.leftovers(pyoci, cid) == {}


def _wait_stopped_process(p: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        assert time.monotonic() < deadline, f"{what} did not stop at its fault point"
        time.sleep(0.01)


@pytest.mark.parametrize("then", ["start", "delete --force"])
def test_commands_wait_for_a_create_under_way(pyoci, sleeper, then):
    """start and delete --force of a container whose create is still running wait for it
    (its lock) and then act on what it made: the container runs, or is removed whole."""
    cid = "crash-wait"
    snap = Snapshot(os.path.dirname(sleeper))
    p = subprocess.Popen(pyoci.argv("create", "--bundle", sleeper, cid),
                         env=_env("create:ready:stop"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waiting = None
    try:
        _wait_stopped_process(p, "create")
        assert pyoci.state(cid)["status"] == "creating"
        waiting = subprocess.Popen(pyoci.argv(*then.split(), cid), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.2)                       # (not a threshold: it must still be waiting)
        assert waiting.poll() is None, waiting.stderr.read()
        os.kill(p.pid, signal.SIGCONT)
        assert p.wait(timeout=30) == 0
        assert waiting.wait(timeout=30) == 0, waiting.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if waiting is not None:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
            waiting.stderr.close()
    if then == "start":
        assert pyoci.state(cid)["status"] == "running"
        assert _delete_force(pyoci, cid).returncode == 0
    else:
        assert pyoci("state", cid).returncode == 1
    assert snap.leftovers(pyoci, cid) == {}
