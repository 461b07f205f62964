"""pyoci.linux.devices against the real kernel (forked children in new mount namespaces)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from pyoci.errors import ConfigError
from pyoci.linux import devices, mountinfo
from pyoci.spec import config
from test_mounts import minimal_spec, run_in_child, setup_all

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def rootfs(tmp_path, rootfs_cache):
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", rootfs_cache, str(dest)], check=True)
    return str(dest)


@pytest.fixture(autouse=True)
def no_host_mount_leak(tmp_path):
    yield
    leaked = [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()
              if mi["mountpoint"].startswith(str(tmp_path))]
    assert not leaked, f"mounts leaked onto the host: {leaked}"


def _stat(path: str) -> dict:
    st = os.lstat(path)
    return {"mode": st.st_mode, "rdev": st.st_rdev, "uid": st.st_uid, "gid": st.st_gid,
            "dev": st.st_dev}


EXTRA = [
    {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
     "uid": 1000, "gid": 100},
    {"path": "/dev/sub/dir/myzero", "type": "u", "major": 1, "minor": 5},
    {"path": "/dev/myloop", "type": "b", "major": 7, "minor": 200, "fileMode": 0o660,
     "gid": 6},
    {"path": "/dev/myfifo", "type": "p", "fileMode": 0o640},
    {"path": "/dev/typed", "type": "c", "major": 1, "minor": 7, "fileMode": 0o020640},
]


def test_default_devices_and_links(rootfs):
    spec = minimal_spec()

    def child():
        setup_all(spec, rootfs)
        out = {d.path: _stat(d.path) for d in devices.DEFAULT_DEVICES}
        out["links"] = {n: os.readlink(f"/dev/{n}") for n in os.listdir("/dev")
                        if os.path.islink(f"/dev/{n}")}
        return out

    out = run_in_child(child)
    for d in devices.DEFAULT_DEVICES:
        st = out[d.path]
        assert stat.S_ISCHR(st["mode"]), d.path
        assert stat.S_IMODE(st["mode"]) == 0o666, d.path
        assert st["rdev"] == os.makedev(d.major, d.minor), d.path
        assert (st["uid"], st["gid"]) == (0, 0)
    links = out["links"]
    assert links["ptmx"] == "pts/ptmx"
    assert links["fd"] == "/proc/self/fd"
    assert links["stdin"] == "/proc/self/fd/0"
    assert links["stdout"] == "/proc/self/fd/1"
    assert links["stderr"] == "/proc/self/fd/2"
    assert ("core" in links) == os.path.exists("/proc/kcore")


def test_linux_devices_modes_owner_numbers(rootfs):
    spec = minimal_spec(devices=EXTRA)

    def child():
        setup_all(spec, rootfs)
        return {d["path"]: _stat(d["path"]) for d in EXTRA}

    out = run_in_child(child)
    a = out["/dev/mynull"]
    assert stat.S_ISCHR(a["mode"]) and stat.S_IMODE(a["mode"]) == 0o600
    assert a["rdev"] == os.makedev(1, 3) and (a["uid"], a["gid"]) == (1000, 100)
    b = out["/dev/sub/dir/myzero"]
    assert stat.S_ISCHR(b["mode"]) and stat.S_IMODE(b["mode"]) == 0o666
    assert b["rdev"] == os.makedev(1, 5)
    c = out["/dev/myloop"]
    assert stat.S_ISBLK(c["mode"]) and stat.S_IMODE(c["mode"]) == 0o660
    assert c["rdev"] == os.makedev(7, 200) and (c["uid"], c["gid"]) == (0, 6)
    d = out["/dev/myfifo"]
    assert stat.S_ISFIFO(d["mode"]) and stat.S_IMODE(d["mode"]) == 0o640
    e = out["/dev/typed"]  # file-type bits in fileMode are ignored, as runc does
    assert stat.S_ISCHR(e["mode"]) and stat.S_IMODE(e["mode"]) == 0o640


def test_linux_device_overrides_default(rootfs):
    spec = minimal_spec(devices=[{"path": "/dev/null", "type": "c", "major": 1, "minor": 3,
                                  "fileMode": 0o600, "uid": 5, "gid": 5}])

    def child():
        setup_all(spec, rootfs)
        return _stat("/dev/null")

    st = run_in_child(child)
    assert stat.S_IMODE(st["mode"]) == 0o600 and st["uid"] == 5


def test_devices_created_in_rootfs_dev_without_dev_mount(rootfs):
    """When /dev is not a mount at all, devices still go into the rootfs's own /dev."""
    spec = minimal_spec(devices=[EXTRA[0]])
    spec["mounts"] = [spec["mounts"][0]]  # proc only

    def child():
        setup_all(spec, rootfs)
        return {"null": _stat("/dev/null"), "mine": _stat("/dev/mynull"),
                "ptmx": os.readlink("/dev/ptmx"), "devdev": os.stat("/dev").st_dev,
                "rootdev": os.stat("/").st_dev}

    out = run_in_child(child)
    assert out["devdev"] == out["rootdev"]
    assert out["null"]["rdev"] == os.makedev(1, 3)
    assert out["mine"]["uid"] == 1000 and out["ptmx"] == "pts/ptmx"
    # they were made in the bundle's rootfs directory itself
    assert stat.S_ISCHR(os.lstat(os.path.join(rootfs, "dev/mynull")).st_mode)


def test_existing_ptmx_replaced(rootfs):
    spec = minimal_spec()
    spec["mounts"] = [spec["mounts"][0]]
    with open(os.path.join(rootfs, "dev/ptmx"), "w") as f:
        f.write("junk")

    def child():
        setup_all(spec, rootfs)
        return os.readlink("/dev/ptmx")

    assert run_in_child(child) == "pts/ptmx"


def test_host_dev_bind_skips_device_setup(rootfs):
    spec = minimal_spec()
    spec["mounts"][1] = {"destination": "/dev", "type": "bind", "source": "/dev",
                         "options": ["rbind", "nosuid"]}

    def child():
        setup_all(spec, rootfs)
        return {"null": _stat("/dev/null"), "ptmx_link": os.path.islink("/dev/ptmx"),
                "fstype": [mi["fstype"] for mi in mountinfo.parse_mountinfo()
                           if mi["mountpoint"] == "/dev"][-1]}

    out = run_in_child(child)
    host = os.lstat("/dev/ptmx")
    assert out["ptmx_link"] == stat.S_ISLNK(host.st_mode)
    assert out["null"]["rdev"] == os.makedev(1, 3)
    assert out["fstype"] == [mi["fstype"] for mi in mountinfo.parse_mountinfo()
                             if mi["mountpoint"] == "/dev"][-1]


def test_device_path_symlink_stays_in_root(rootfs, tmp_path):
    """A symlink in the rootfs's /dev cannot make mknod land outside the rootfs."""
    outside = tmp_path / "outside"
    outside.mkdir()
    spec = minimal_spec(devices=[{"path": "/dev/evil/node", "type": "c", "major": 1,
                                  "minor": 3}])
    spec["mounts"] = [spec["mounts"][0]]
    os.symlink(str(outside), os.path.join(rootfs, "dev/evil"))

    def child():
        setup_all(spec, rootfs)
        return os.path.exists(f"{outside}/node")

    assert run_in_child(child) is True  # inside the container, resolved in its root
    assert os.listdir(outside) == []
    assert stat.S_ISCHR(os.lstat(os.path.join(rootfs, str(outside).lstrip("/"), "node"))
                        .st_mode)


def test_userns_binds_host_devices(rootfs):
    spec = minimal_spec(devices=[EXTRA[0], EXTRA[3]])
    spec["mounts"] = [spec["mounts"][1]]  # /dev tmpfs; no proc without a pid ns
    spec["linux"]["devices"] = [{"path": "/dev/zero", "type": "c", "major": 1, "minor": 5},
                                EXTRA[3]]
    spec["linux"]["namespaces"].append({"type": "user"})

    def child():
        setup_all(spec, rootfs, userns=True)
        return {"zero": _stat("/dev/zero"), "devdev": os.stat("/dev").st_dev,
                "fifo": _stat("/dev/myfifo"), "tty": _stat("/dev/tty")}

    out = run_in_child(child, userns=True)
    assert out["zero"]["rdev"] == os.makedev(1, 5)
    assert out["zero"]["dev"] != out["devdev"]  # the host's node, bind-mounted
    assert out["tty"]["rdev"] == os.makedev(5, 0)
    assert stat.S_ISFIFO(out["fifo"]["mode"])  # fifos need no privilege: made in place
    assert out["fifo"]["dev"] == out["devdev"]


@pytest.mark.parametrize("dev,field", [
    ({"path": "/dev/x", "type": "x", "major": 1, "minor": 1}, "linux.devices[0].type"),
    ({"path": "/dev/x", "major": 1, "minor": 1}, "linux.devices[0].type"),
    ({"path": "/dev/x", "type": "b", "major": 1}, "linux.devices[0].minor"),
    ({"path": "/dev/x", "type": "u", "minor": 1}, "linux.devices[0].major"),
    ({"path": "/dev/x", "type": "c", "major": True, "minor": 1}, "linux.devices[0].major"),
    ({"path": "/dev/x", "type": "c", "major": -1, "minor": 1}, "linux.devices[0].major"),
    ({"path": "x", "type": "c", "major": 1, "minor": 1}, "linux.devices[0].path"),
    ({"type": "c", "major": 1, "minor": 1}, "linux.devices[0].path"),
    ({"path": "/dev", "type": "c", "major": 1, "minor": 1}, "linux.devices[0].path"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": -1},
     "linux.devices[0].fileMode"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "uid": -1},
     "linux.devices[0].uid"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "gid": "0"},
     "linux.devices[0].gid"),
])
def test_check_devices_errors(dev, field):
    with pytest.raises(ConfigError) as ei:
        devices.check_devices({"linux": {"devices": [dev]}})
    assert str(ei.value).startswith(field), str(ei.value)


def test_check_devices_accepts_valid():
    devices.check_devices({"linux": {"devices": EXTRA}})
    devices.check_devices({"linux": {}})
    with pytest.raises(ConfigError, match=r"^linux\.devices: "):
        devices.check_devices({"linux": {"devices": {"path": "/dev/x"}}})


def test_device_list_merges_defaults():
    spec = {"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1,
                                   "minor": 3, "fileMode": 0o600}]}}
    paths = [d.path for d in devices.device_list(config.parse(spec))]
    assert paths.count("/dev/null") == 1
    assert set(paths) == {d.path for d in devices.DEFAULT_DEVICES}
