"""Rootless on a pure cgroup v2 host (the lane's guest) with a delegated subtree: a user made
by the test owns /sys/fs/cgroup/<dir> (the directory, cgroup.procs, cgroup.subtree_control,
cgroup.threads, as systemd's Delegate=yes), the runtime runs in a leaf below it, and a
container whose cgroupsPath is in that subtree gets its cgroup and its limits, for pyoci as
for runc; a cgroupsPath outside it fails for both."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from lanekit import CGROUP_ROOT, PYOCI, read, remove_cgroup_tree
from support.harness import reap_zombies

BINARIES = {"pyoci": PYOCI, "runc": shutil.which("runc")}
DELEGATED = "pyoci-lane-rootless"
ENTER = ("import os, sys\n"
         "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
         "os.setgroups([]); os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))\n"
         "os.execv(sys.argv[4], sys.argv[4:])\n")


@pytest.fixture(scope="module")
def user():
    if not shutil.which("useradd"):
        pytest.skip("needs useradd")
    name = "pyocilane"
    home = tempfile.mkdtemp(prefix="pyoci-lane-rootless-")
    os.chmod(home, 0o755)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--user-group", name],
                   check=True, capture_output=True)
    pw = pwd.getpwnam(name)
    xdg = os.path.join(home, "run")
    os.mkdir(xdg, 0o700)
    os.chown(xdg, pw.pw_uid, pw.pw_gid)
    deleg = os.path.join(CGROUP_ROOT, DELEGATED)
    os.mkdir(deleg)
    leaf = os.path.join(deleg, "caller")
    os.mkdir(leaf)
    for p in (deleg, leaf):
        for f in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(p, f) if f else p, pw.pw_uid, pw.pw_gid)
    from support.rootfs import build_rootfs

    rootfs = build_rootfs(os.path.join(home, "rootfs"))
    yield {"uid": pw.pw_uid, "gid": pw.pw_gid, "home": home, "xdg": xdg, "deleg": deleg,
           "leaf": leaf, "rootfs": rootfs}
    remove_cgroup_tree(deleg)
    subprocess.run(["userdel", name], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def as_user(user, *argv: str, cwd: str = "/") -> subprocess.CompletedProcess:
    """argv as the user, from the delegated subtree's leaf (moved there by root first)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": user["home"], "XDG_RUNTIME_DIR": user["xdg"], "USER": "pyocilane"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([sys.executable, "-c", ENTER,
                            os.path.join(user["leaf"], "cgroup.procs"), str(user["uid"]),
                            str(user["gid"]), *argv], env=env, cwd=cwd, stdout=out,
                           stderr=err, stdin=subprocess.DEVNULL, timeout=300)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(argv, p.returncode, out.read().decode(),
                                        err.read().decode())
    reap_zombies()
    return r


def bundle(user, cfg_edit) -> str:
    d = tempfile.mkdtemp(dir=user["home"])
    os.chmod(d, 0o755)
    from support.rootfs import base_config
    from pyoci.spec.default import to_rootless

    cfg = base_config(["sleep", "100"])
    to_rootless(cfg)
    for m in cfg["linux"]["uidMappings"]:
        m["hostID"] = user["uid"]
    for m in cfg["linux"]["gidMappings"]:
        m["hostID"] = user["gid"]
    cfg["root"]["path"] = user["rootfs"]
    cfg_edit(cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_delegated_subtree_gets_cgroup_and_limits(user, name):
    if not BINARIES[name]:
        pytest.skip(f"{name} is not installed")
    cid = f"rl-{name}"
    path = f"/{DELEGATED}/{cid}"

    def limits(cfg):
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 20}}
    b = bundle(user, limits)
    binary = BINARIES[name]
    r = as_user(user, binary, "run", "-d", cid, cwd=b)
    assert r.returncode == 0, r.stderr
    try:
        st = json.loads(as_user(user, binary, "state", cid).stdout)
        assert read(f"/proc/{st['pid']}/cgroup") == f"0::{path}"
        cg = CGROUP_ROOT + path
        assert read(f"{cg}/memory.max") == str(64 << 20)
        assert read(f"{cg}/pids.max") == "20"
        assert os.stat(cg).st_uid == user["uid"]
    finally:
        r = as_user(user, binary, "delete", "--force", cid)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(CGROUP_ROOT + path)


def test_cgroups_path_outside_the_subtree_fails(user):
    """A cgroupsPath outside what the user may write: both fail (pyoci naming the field and
    the permission error), nothing is made."""
    def outside(cfg):
        cfg["linux"]["cgroupsPath"] = "/pyoci-lane-not-delegated/x"
    b = bundle(user, outside)
    for name, binary in BINARIES.items():
        if not binary:
            continue
        r = as_user(user, binary, "run", "-d", "rl-out", cwd=b)
        assert r.returncode == 1, (name, r.stderr)
        if name == "pyoci":
            assert "cgroupsPath" in r.stderr and "ermission denied" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(CGROUP_ROOT, "pyoci-lane-not-delegated"))
