"""linux.cgroupsPath cannot point pyoci at the host's cgroups (issue 11, section 1).

- A cgroupsPath naming a hierarchy root, pyoci's own cgroup or one of its ancestors, or
  climbing with ".." is refused at create, one line naming linux.cgroupsPath, nothing left.
- A cgroupsPath naming an existing cgroup with other processes in it is accepted with runc
  1.1's warning, but pyoci writes no limit or device rule into it, never freezes it, never
  removes it and never signals a process in it that is not the container's: a victim
  process in that shared cgroup survives create, start, exec, update, pause, resume,
  kill --all, delete and delete --force (runc 1.1.5's kill --all kills it).

Every cgroup a test makes is removed and every process it starts is killed and reaped by
PID, even when the test fails."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from pyoci.cgroups import paths
from pyoci.errors import ConfigError
from support.harness import IS_ROOT, reap_zombies

MODE_OK = IS_ROOT and os.path.isdir("/sys/fs/cgroup")
needs_cgroups = pytest.mark.skipif(not MODE_OK, reason="needs root and cgroups")

WARNING = "container's cgroup is not empty: 1 process(es) found"

HOSTILE = ["/", "//", "///", "/.", "/../../..", "/a/../../b", ".", "./", "..", "../../..",
           "a/../..", "a/./../../b"]


# --- pure path rules ------------------------------------------------------------------------

def _mounts():
    return [paths.CgroupMount("/sys/fs/cgroup/cpu", "/", "cgroup", frozenset({"cpu"})),
            paths.CgroupMount("/sys/fs/cgroup/unified", "/", "cgroup2", frozenset())]


@pytest.mark.parametrize("given", HOSTILE)
def test_hostile_paths_are_refused_by_the_path_rules(given):
    own = {"cpu": "/a/b", "": "/a/b"}
    with pytest.raises(ConfigError, match=r"^linux\.cgroupsPath: "):
        paths.v1_paths(given, "c1", _mounts(), own)
    with pytest.raises(ConfigError, match=r"^linux\.cgroupsPath: "):
        paths.unified_path(given, "c1", _mounts(), own)


@pytest.mark.parametrize("given", ["/a/b", "/a", "/a/b/", "/a//b"])
def test_own_cgroup_and_its_ancestors_are_refused(given):
    own = {"cpu": "/a/b", "": "/a/b"}
    with pytest.raises(ConfigError, match=r"^linux\.cgroupsPath: .*pyoci's own cgroup"):
        paths.v1_paths(given, "c1", _mounts(), own)


@pytest.mark.parametrize("given, want", [
    ("/x", "/sys/fs/cgroup/cpu/x"), ("/a/b/c", "/sys/fs/cgroup/cpu/a/b/c"),
    ("/a/x/../y", "/sys/fs/cgroup/cpu/a/y"), ("x/y", "/sys/fs/cgroup/cpu/a/b/x/y"),
    ("x/../y", "/sys/fs/cgroup/cpu/a/b/y"), ("", "/sys/fs/cgroup/cpu/a/b/c1"),
    (None, "/sys/fs/cgroup/cpu/a/b/c1")])
def test_ordinary_paths_still_resolve(given, want):
    own = {"cpu": "/a/b", "": "/a/b"}
    assert paths.v1_paths(given, "c1", _mounts(), own)["cpu"] == want


# --- real containers ------------------------------------------------------------------------

def _hierarchies() -> list[str]:
    """Mount points of every mounted cgroup hierarchy (v1 ones and cgroup2)."""
    out = []
    for m in paths.cgroup_mounts():
        if m.mountpoint not in out and m.root == "/":
            out.append(m.mountpoint)
    return out


def _own_paths() -> list[str]:
    """This process's own cgroup in each hierarchy where it is not the root."""
    return sorted({p for p in paths.own_cgroups().values() if p != "/"})


def _entries(root: str) -> list[str]:
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


@needs_cgroups
@pytest.mark.parametrize("given", HOSTILE + ["OWN", "OWN-PARENT"])
def test_hostile_cgroups_path_is_refused(pyoci, bundle_factory, config, given):
    if given.startswith("OWN"):
        own = _own_paths()
        if not own:
            pytest.skip("this process is in the root cgroup of every hierarchy")
        given = own[0] if given == "OWN" else os.path.dirname(own[0])
    config["linux"]["cgroupsPath"] = given
    config["process"]["args"] = ["sleep", "60"]
    b = bundle_factory(config)
    r = pyoci("create", "--bundle", b, "hostile")
    if r.returncode == 0:
        # accepted: the container sits in a host cgroup, and `delete --force` (the fixture's
        # cleanup) would signal every process there: end only its init, by PID
        import shutil
        import signal

        d = os.path.join(pyoci.root, "hostile")
        with open(os.path.join(d, "state.json")) as f:
            os.kill(json.load(f)["pid"], signal.SIGKILL)
        shutil.rmtree(d)
        reap_zombies()
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "linux.cgroupsPath" in lines[0], r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert _entries(pyoci.root) == []
    for sub, m in paths.v1_mounts().items():     # not even the default cgroup was made
        assert not os.path.exists(paths.resolve(m, paths.own_cgroups().get(sub), "hostile"))


class Shared:
    """A cgroup made by the test in every hierarchy, with a victim process in it."""

    def __init__(self) -> None:
        self.name = f"pyoci-test-shared-{uuid.uuid4().hex[:8]}"
        self.dirs: list[str] = []
        self.victim: subprocess.Popen | None = None

    def make(self) -> Shared:
        for h in _hierarchies():
            d = os.path.join(h, self.name)
            os.mkdir(d)
            self.dirs.append(d)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if os.path.exists(os.path.join(d, f)):
                    with open(os.path.join(h, f)) as src, open(os.path.join(d, f), "w") as dst:
                        dst.write(src.read())
        self.victim = subprocess.Popen(["sleep", "600"])
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(self.victim.pid))
        return self

    def alive(self) -> bool:
        assert self.victim is not None
        return self.victim.poll() is None

    def members(self) -> dict[str, list[int]]:
        out = {}
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out[d] = sorted(int(x) for x in f.read().split())
        return out

    def files(self) -> dict[str, str]:
        """The limits and rules a container would write."""
        out = {}
        for d in self.dirs:
            for f in ("devices.list", "memory.limit_in_bytes", "pids.max", "cpu.shares",
                      "freezer.state", "cgroup.freeze", "cgroup.subtree_control"):
                p = os.path.join(d, f)
                if os.path.exists(p):
                    with open(p) as fh:
                        out[p] = fh.read()
        return out

    def cleanup(self) -> None:
        if self.victim is not None:
            self.victim.kill()
            self.victim.wait()
        for d in self.dirs:
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


@pytest.fixture
def shared():
    if not MODE_OK:
        pytest.skip("needs root and cgroups")
    s = Shared()
    try:
        yield s.make()
    finally:
        s.cleanup()


def _wait_stopped(rt, cid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_zombies()
        if rt.state(cid)["status"] == "stopped":
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} did not stop")


def _alive(pid: int) -> bool:
    reap_zombies()
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@needs_cgroups
@pytest.mark.parametrize("pidns", [True, False], ids=["pidns", "hostpid"])
@pytest.mark.parametrize("ending", ["kill-all-then-delete", "delete-force"])
def test_victim_in_a_shared_cgroup_survives_every_command(pyoci, bundle_factory, config,
                                                          shared, pidns, ending):
    config["linux"]["cgroupsPath"] = "/" + shared.name
    config["process"]["args"] = ["sleep", "600"]
    if not pidns:
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "pid"]
    b = bundle_factory(config)
    files = shared.files()
    r = pyoci("create", "--bundle", b, "c1")
    assert r.returncode == 0, r.stderr
    assert WARNING in r.stderr
    pyoci("start", "c1", check=True)
    init = pyoci.state("c1")["pid"]
    pyoci("exec", "-d", "c1", "sleep", "500", check=True)
    assert shared.alive()
    for cmd in (["update", "--memory", "64m", "c1"], ["update", "--pids-limit", "5", "c1"],
                ["pause", "c1"]):
        r = pyoci(*cmd)
        assert r.returncode == 1, r.stderr
        assert "not created by pyoci" in r.stderr and len(r.stderr.splitlines()) == 1
    r = pyoci("resume", "c1")
    assert r.returncode == 1
    assert pyoci.state("c1")["status"] == "running"
    assert shared.files() == files          # no limit, rule or freeze was written
    procs = [p for p in shared.members()[shared.dirs[0]] if p != shared.victim.pid]
    assert init in procs and len(procs) == 2, procs     # the init and exec's process
    r = pyoci("ps", "--format", "json", "c1")           # ps lists them, not the victim
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)) == sorted(procs)
    if ending == "kill-all-then-delete":
        pyoci("kill", "--all", "c1", "KILL", check=True)
        _wait_stopped(pyoci, "c1")
        pyoci("delete", "c1", check=True)
    else:
        # the init of a PID namespace waits for its killed members to be reaped, and exec's
        # process is this (subreaper) test's child: reap them while delete waits
        p = subprocess.Popen(pyoci.argv("delete", "--force", "c1"), stderr=subprocess.PIPE)
        while p.poll() is None:
            for pid in procs:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.01)
        assert p.returncode == 0, p.stderr.read()
        p.stderr.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(p) for p in procs)     # the container's processes are gone
    assert shared.alive()                        # the victim is not
    assert all(os.path.isdir(d) for d in shared.dirs)
    assert all(m == [shared.victim.pid] for m in shared.members().values())
    assert shared.files() == files
    assert _entries(pyoci.root) == []


@needs_cgroups
def test_non_empty_cgroup_warns_as_runc_does(runtime, bundle_factory, config, shared):
    """runc 1.1.5 warns and goes on; so does pyoci, and delete --force spares the victim in
    both."""
    config["linux"]["cgroupsPath"] = "/" + shared.name
    config["process"]["args"] = ["sleep", "600"]
    b = bundle_factory(config)
    r = runtime("create", "--bundle", b, "c1")
    assert r.returncode == 0, r.stderr
    assert WARNING in r.stderr
    runtime("delete", "--force", "c1", check=True)
    assert shared.alive()


@needs_cgroups
def test_empty_existing_cgroup_is_joined_but_not_changed(pyoci, bundle_factory, config,
                                                         shared):
    """An existing cgroup pyoci did not create gets no limits even when empty; no warning
    about processes then."""
    shared.victim.kill()
    shared.victim.wait()
    config["linux"]["cgroupsPath"] = "/" + shared.name
    config["linux"]["resources"] = {"pids": {"limit": 7}, "devices": [
        {"allow": False, "access": "rwm"}]}
    config["process"]["args"] = ["sleep", "600"]
    b = bundle_factory(config)
    files = shared.files()
    r = pyoci("run", "-d", "--bundle", b, "c1")
    assert r.returncode == 0, r.stderr
    assert WARNING[:30] not in r.stderr
    assert "linux.resources: not applied" in r.stderr
    assert shared.files() == files
    pyoci("delete", "--force", "c1", check=True)
    assert all(os.path.isdir(d) for d in shared.dirs)
