"""A corrupt or hand-made state.json (found by tests/test_fuzz.py): every command answers with
one line naming the file and the field, never blocks on a FIFO, never follows a symlink, never
reports an internal error; `list` skips the entry; once the real state is back, `delete
--force` removes everything."""

from __future__ import annotations

import json
import os

import pytest

from support.fuzz import Snapshot, check_output, run
from support.harness import IS_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

COMMANDS = [["state", "c1"], ["start", "c1"], ["kill", "c1", "KILL"], ["delete", "c1"],
            ["delete", "--force", "c1"], ["kill", "--all", "c1"], ["pause", "c1"],
            ["resume", "c1"], ["ps", "c1"], ["exec", "c1", "true"],
            ["update", "--pids-limit", "9", "c1"], ["events", "--stats", "c1"]]


def _breakers():
    def doc(**change):
        def f(path, orig):
            d = dict(orig, **change)
            for k, v in change.items():
                if v is _DEL:
                    del d[k]
            with open(path, "w") as fh:
                json.dump(d, fh)
        return f

    def replace(make):
        def f(path, orig):
            os.unlink(path)
            make(path)
        return f

    return {
        "fifo": (replace(os.mkfifo), "not a regular file"),
        "directory": (replace(os.mkdir), "not a regular file"),
        "symlink": (replace(lambda p: os.symlink("/etc/hostname", p)), "cannot read"),
        "list": (replace(lambda p: open(p, "w").write("[]")), "not an object"),
        "pid-string": (doc(pid="12"), "pid"),
        "pid-negative": (doc(pid=-5), "pid"),
        "pid-huge": (doc(pid=2**64), "pid"),
        "starttime-float": (doc(startTime=1.5), "startTime"),
        "cgroup-string": (doc(cgroup="x"), "cgroup"),
        # a cgroup object of the wrong shape (internal errors in ps and kill --all before:
        # found by the large fuzz run)
        "cgroup-paths-string": (doc(cgroup={"driver": "v1", "paths": "x"}), "cgroup.paths"),
        "cgroup-paths-relative": (doc(cgroup={"driver": "v1", "paths": {"freezer": "x"}}),
                                  "cgroup.paths"),
        "cgroup-path-int": (doc(cgroup={"driver": "v2", "path": 5}), "cgroup.path"),
        "cgroup-driver-other": (doc(cgroup={"driver": "v3", "path": "/x"}), "cgroup.driver"),
        "cgroup-created-string": (doc(cgroup={"driver": "v1", "paths": {}, "created": "/x"}),
                                  "cgroup.created"),
        "cgroup-systemd-fs": (doc(cgroup={"driver": "systemd", "id": "c1", "fs": "x"}),
                              "cgroup.fs"),
        "namespaces-list": (doc(namespaces=["x"]), "namespaces"),
        "namespace-int": (doc(namespaces={"pid": 5}), "namespaces.pid"),
        "annotations-int": (doc(annotations={"a": 1}), "annotations.a"),
        "id-missing": (doc(id=_DEL), "id"),
        "id-other": (doc(id="other"), "id"),
        "bundle-int": (doc(bundle=5), "bundle"),
        "created-null": (doc(created=None), "created"),
        "started-null": (doc(started=None), "started"),
        "deep": (replace(lambda p: open(p, "w").write("[" * 100000 + "]" * 100000)),
                 "corrupt"),
    }


_DEL = object()
BREAKERS = _breakers()


@pytest.mark.parametrize("kind", sorted(BREAKERS))
def test_broken_state_file(pyoci, bundle_factory, config, kind, tmp_path):
    config["process"]["args"] = ["sleep", "1000"]
    b = bundle_factory(config)
    snap = Snapshot(pyoci.root, mine=str(tmp_path))
    pyoci("create", "--bundle", b, "c1", check=True)
    path = os.path.join(pyoci.root, "c1", "state.json")
    with open(path, "rb") as f:
        orig_bytes = f.read()
    breaker, word = BREAKERS[kind]
    breaker(path, json.loads(orig_bytes))
    try:
        for argv in COMMANDS:
            r = run(pyoci.root, *argv, timeout=20)
            err = check_output(r)
            assert err is not None, (argv, r)
            assert "c1" in err and word in err, (argv, r)
        r = run(pyoci.root, "list", "--format", "json", timeout=20)
        assert check_output(r) is None and json.loads(r.out) == [], r
    finally:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        elif os.path.lexists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.write(orig_bytes)
    r = run(pyoci.root, "delete", "--force", "c1")
    assert r.rc == 0, r
    snap.check()


def test_cgroup_shape_accepts_what_the_drivers_write(monkeypatch):
    """The check of a state's cgroup object (pyoci.cgstate) takes every driver's to_state(),
    and refuses wrong shapes (a missing path, a relative mountpoint, systemd's fs)."""
    from pyoci import cgstate
    from pyoci.cgroups import systemd
    from pyoci.cgroups.v1 import V1Manager
    from pyoci.cgroups.v2 import V2Manager

    monkeypatch.setattr(systemd, "require_systemd", lambda: None)
    v1 = V1Manager({"cpu": "/sys/fs/cgroup/cpu/c1", "memory": "/sys/fs/cgroup/memory/c1"},
                   "/sys/fs/cgroup/unified/c1", ["/sys/fs/cgroup/cpu/c1"], True)
    v1.rootless = True
    v2 = V2Manager("/sys/fs/cgroup/c1", created=["/sys/fs/cgroup/c1"])
    docs = [v1.to_state(), V1Manager({}).to_state(), v2.to_state(),
            systemd.SystemdManager("system.slice:pyoci:c1", "c1", fs=v2).to_state(),
            systemd.SystemdManager(None, "c1", fs=v1).to_state()]
    for d in docs:
        assert cgstate.problem(d) is None, d
    bad = [{"driver": "v1", "paths": "x"}, {"driver": "v2"}, {"driver": None},
           {"driver": "systemd", "id": "c1", "fs": {"driver": "v1", "paths": {"a": 1}}},
           {"driver": "v2", "path": "/x", "mountpoint": "rel"}]
    for d in bad:
        assert cgstate.problem(d), d


def test_events_stats_of_a_container_stopping_meanwhile(pyoci, bundle_factory, config,
                                                        monkeypatch):
    """events --stats racing with delete (found by tests/test_soak.py's racing commands,
    seed 14): the init is killed and the cgroup removed between the status check and the
    stats read (ENODEV): 'is not running', not the failed read of a cgroup file."""
    from pyoci.errors import StateError, SysError
    from pyoci.ops import events

    config["process"]["args"] = ["sleep", "1000"]
    pyoci("run", "-d", "--bundle", bundle_factory(config), "c1", check=True)
    real_manager = events.manager

    class Removed:
        def stats(self):
            raise SysError("read /sys/fs/cgroup/cpuset/c1/cpuset.memory_migrate: "
                           "No such device")

    def manager(st, what):
        real_manager(st, what)
        pyoci("kill", "c1", "KILL", check=True)         # delete --force, in between
        pyoci("delete", "--force", "c1", check=True)
        return Removed()

    monkeypatch.setattr(events, "manager", manager)
    with pytest.raises(StateError, match="c1 is not running"):
        events.events(pyoci.root, "c1", True, "5s")


def test_exec_into_a_container_deleted_meanwhile(pyoci, bundle_factory, config):
    """exec racing with delete --force (found by tests/test_soak.py's racing commands, seed
    14): exec stopped after forking its joiner (fault point exec:forked:stop), the container
    deleted, exec continued: 'cannot exec in a stopped container', not the failed
    cgroup.procs write."""
    import signal
    import subprocess
    import time

    from support.harness import PYOCI

    config["process"]["args"] = ["sleep", "1000"]
    pyoci("run", "-d", "--bundle", bundle_factory(config), "c1", check=True)
    p = subprocess.Popen([PYOCI, "--root", pyoci.root, "exec", "c1", "true"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYOCI_FAULT="exec:forked:stop"))
    try:
        while True:                                  # stopped at the fault point
            with open(f"/proc/{p.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert p.poll() is None, p.communicate()
            time.sleep(0.01)
        pyoci("delete", "--force", "c1", check=True)
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1 and err == "pyoci: cannot exec in a stopped container\n", \
        (p.returncode, err)
