"""A config without a mount namespace runs as with runc: the container's mounts are made in
the runtime's mount namespace, under the rootfs (bound onto itself), and the init chroots.
Unlike runc, pyoci leaves the propagation of the host's / and of the rootfs' parent alone,
and unmounts at delete (or when create fails) exactly what it mounted: runc leaves proc,
sysfs, /dev, devpts, shm, mqueue and the rootfs bind mounted in the host."""

from __future__ import annotations

import json
import os

import pytest

from pyoci.linux import mountinfo, syscalls as sc


def _without_mount_ns(config, args):
    config["process"]["args"] = args
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "mount"]
    config["linux"]["maskedPaths"] = ["/proc/kcore"]
    config["linux"]["readonlyPaths"] = ["/proc/sys"]
    return config


def _rootfs(bundle: str) -> str:
    return os.path.realpath(os.path.join(bundle, "rootfs"))


def _host_shares_mounts() -> bool:
    return any(any(o.startswith("shared:") for o in mi["optional"])
               for mi in mountinfo.parse_mountinfo())


@pytest.fixture
def unmount_leftovers():
    """Bundles whose leftover mounts (runc's) the test unmounts at teardown: its own."""
    rootfses: list[str] = []
    yield rootfses
    for r in rootfses:
        for _ in range(50):
            under = mountinfo.mounts_under(r)
            if not under:
                break
            for mp in sorted(set(under.values()), key=len, reverse=True):
                try:
                    sc.umount2(mp, sc.MNT_DETACH)
                except OSError:
                    pass


def test_runs_and_delete_leaves_nothing_mounted(pyoci, bundle_factory, config):
    cfg = _without_mount_ns(config, ["sh", "-c", "cat /proc/self/mountinfo; ls /"])
    b = bundle_factory(cfg)
    rootfs = _rootfs(b)
    before = mountinfo.mounts_under(rootfs)
    assert before == {}
    propagation = {mi["id"]: mi["optional"] for mi in mountinfo.parse_mountinfo()}
    out = pyoci("run", "-b", b, "nm", check=True).stdout
    assert "linuxrc" in out                       # the rootfs is its /
    assert mountinfo.mounts_under(rootfs) == {}, mountinfo.mounts_under(rootfs)
    # nothing of the host's changed its propagation (runc makes / rslave)
    after = {mi["id"]: mi["optional"] for mi in mountinfo.parse_mountinfo()}
    assert {i: p for i, p in after.items() if i in propagation} == propagation


def test_create_records_and_delete_unmounts(pyoci, bundle_factory, config):
    cfg = _without_mount_ns(config, ["sleep", "30"])
    cfg["root"]["readonly"] = True
    b = bundle_factory(cfg)
    rootfs = _rootfs(b)
    pyoci("create", "-b", b, "nm", check=True)
    under = mountinfo.mounts_under(rootfs)
    # the rootfs bind and the config's mounts, in the runtime's mount namespace
    paths = set(under.values())
    assert {rootfs, rootfs + "/proc", rootfs + "/dev", rootfs + "/dev/pts",
            rootfs + "/sys"} <= paths, paths
    # root.readonly made the rootfs bind read-only, not the mount holding the bundle
    holder = mountinfo.mount_of(os.path.dirname(rootfs), mountinfo.parse_mountinfo())
    assert "rw" in holder["options"]
    st = json.load(open(os.path.join(pyoci.root, "nm", "state.json")))
    assert sorted(tuple(m) for m in st["mounts"]) == sorted(under.items())
    pyoci("start", "nm", check=True)
    # exec runs in the container's root too
    r = pyoci("exec", "nm", "ls", "/")
    assert r.returncode == 0 and "linuxrc" in r.stdout, r.stderr
    pyoci("delete", "--force", "nm", check=True)
    assert mountinfo.mounts_under(rootfs) == {}


def test_failed_create_leaves_nothing_mounted(pyoci, bundle_factory, config):
    """The init fails after some mounts (an unknown filesystem type): they are undone."""
    cfg = _without_mount_ns(config, ["true"])
    cfg["mounts"].append({"destination": "/mnt", "type": "pyoci-no-such-fs", "source": "x"})
    b = bundle_factory(cfg)
    rootfs = _rootfs(b)
    r = pyoci("create", "-b", b, "nm")
    assert r.returncode == 1 and "mounts[" in r.stderr, r.stderr
    assert mountinfo.mounts_under(rootfs) == {}
    assert not os.path.exists(os.path.join(pyoci.root, "nm"))


def test_delete_leaves_a_mount_it_did_not_make(pyoci, bundle_factory, config, tmp_path,
                                               unmount_leftovers):
    """A recorded path that now leads to another mount is left alone: only the very mounts
    create made are unmounted (here something else covers the rootfs bind itself, so its
    path, and every path below it, reach that mount instead)."""
    cfg = _without_mount_ns(config, ["sleep", "30"])
    b = bundle_factory(cfg)
    rootfs = _rootfs(b)
    unmount_leftovers.append(rootfs)
    pyoci("create", "-b", b, "nm", check=True)
    made = mountinfo.mounts_under(rootfs)
    other = tmp_path / "other"
    other.mkdir()
    sc.mount(str(other), rootfs, None, sc.MS_BIND, None)   # not pyoci's: the test's own
    mine = set(mountinfo.mounts_under(rootfs)) - set(made)
    r = pyoci("delete", "--force", "nm")
    assert r.returncode == 0, r.stderr
    left = mountinfo.mounts_under(rootfs)
    assert mine <= set(left) and set(made) <= set(left), (made, mine, left)
    assert "not unmounted" in r.stderr


def test_same_namespaces_as_runc(pyoci, runc, bundle_factory, config, unmount_leftovers):
    """runtime-tools' linux_ns_itype: no namespaces listed, all inherited from the runtime.
    runc runs it too (and leaves its mounts behind, which this test removes from its own
    bundle); it is only run where runc cannot change the host (no shared mount)."""
    if _host_shares_mounts():
        pytest.skip("a shared host mount: runc would make the host's / rslave")
    config["linux"]["namespaces"] = []
    config.pop("hostname", None)
    config["linux"]["maskedPaths"] = []
    config["linux"]["readonlyPaths"] = []
    config["process"]["args"] = ["sh", "-c", "for n in mnt pid net ipc uts; do "
                                 "readlink /proc/self/ns/$n; done"]
    b = bundle_factory(config)
    unmount_leftovers.append(_rootfs(b))
    ours = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "pid", "net", "ipc", "uts")]
    for rt in (pyoci, runc):
        r = rt("run", "-b", b, f"it-{rt.name}")
        assert r.returncode == 0, (rt.name, r.stderr)
        assert r.stdout.split() == ours, (rt.name, r.stdout)


def test_delete_force_after_create_died_midway(pyoci, bundle_factory, config,
                                               unmount_leftovers):
    """`pyoci create` killed after the init mounted (a createRuntime hook kills it): no
    state.json beyond its "creating" record, but delete --force unmounts what appeared under
    the rootfs since it began."""
    cfg = _without_mount_ns(config, ["true"])
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh",
                                       "args": ["sh", "-c", "kill -9 $PPID; sleep 5"]}]}
    b = bundle_factory(cfg)
    rootfs = _rootfs(b)
    unmount_leftovers.append(rootfs)
    r = pyoci("create", "-b", b, "nm")
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert mountinfo.mounts_under(rootfs), "the init had mounted nothing"
    assert pyoci.state("nm")["status"] in ("creating", "stopped")     # issue 11, section 3
    pyoci("delete", "--force", "nm", check=True)
    assert mountinfo.mounts_under(rootfs) == {}
    assert not os.path.exists(os.path.join(pyoci.root, "nm"))
