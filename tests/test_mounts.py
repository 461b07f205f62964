"""pyoci.linux.mounts and pyoci.linux.rootfs against the real kernel: every test forks a
child that unshares its mount namespace (and a user namespace where asked), sets a busybox
rootfs up, inspects it from inside and reports back as JSON through a pipe. The child always
os._exit()s."""

from __future__ import annotations

import copy
import errno
import os
import stat
import subprocess

import pytest

from pyoci.errors import ConfigError, SysError
from pyoci.cgroups import paths as cgpaths
from pyoci.linux import mountinfo, mounts
from pyoci.linux import rootfs as rootfs_mod
from pyoci.linux import syscalls as sc
from pyoci.spec import config
from support.child import ChildError, in_child
from support.rootfs import base_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run_in_child(fn, *, userns: bool = False, extra_unshare: int = 0, **kw):
    """What fn() returns in a forked child in a new mount namespace (and a user namespace when
    asked: support.child.in_child); what it raises is raised as ChildError."""
    return in_child(fn, userns=userns, unshare=sc.CLONE_NEWNS | extra_unshare, **kw)


def child_error(fn, **kw) -> dict:
    """Run fn in a child, expecting it to raise; return {type, error}."""
    try:
        run_in_child(fn, **kw)
    except ChildError as e:
        return {"type": e.kind, "error": f"{e.kind}: {e.message}"}
    raise AssertionError("child did not fail")


@pytest.fixture
def rootfs(tmp_path, rootfs_cache):
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", rootfs_cache, str(dest)], check=True)
    return str(dest)


@pytest.fixture(autouse=True)
def no_host_mount_leak(tmp_path):
    """Nothing a test child mounts may show up in the host's (pytest's) mount table."""
    yield
    leaked = [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()
              if mi["mountpoint"].startswith(str(tmp_path))]
    assert not leaked, f"mounts leaked onto the host: {leaked}"


def minimal_spec(extra_mounts=(), **linux) -> dict:
    spec = base_config()
    spec["root"]["readonly"] = False
    spec["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        *extra_mounts,
    ]
    spec["linux"] = {"namespaces": [{"type": "mount"}], **linux}
    return spec


def setup_all(spec, rootfs, userns=False, no_pivot=False, mount_fds=None):
    rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=userns, mount_fds=mount_fds)
    rootfs_mod.enter_rootfs(rootfs, no_pivot=no_pivot)
    rootfs_mod.finish_rootfs(config.parse(spec))


def mountinfo_at(path: str) -> dict:
    """The topmost mount at exactly path."""
    found = [mi for mi in mountinfo.parse_mountinfo() if mi["mountpoint"] == path]
    assert found, f"nothing mounted at {path}"
    return found[-1]


def can_write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("x")
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


# --- the runc default config --------------------------------------------------------------

def test_runc_default_config(rootfs):
    spec = base_config()

    def child():
        setup_all(spec, rootfs)
        out = {mp: mountinfo_at(mp) for mp in
               ("/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys")}
        out["cwd"] = os.getcwd()
        out["etc"] = can_write("/etc/newfile")
        out["shm"] = can_write("/dev/shm/file")
        out["procsys"] = can_write("/proc/sys/kernel/hostname")
        out["sysfw"] = os.listdir("/sys/firmware")
        out["keys"] = os.stat("/proc/keys").st_rdev
        out["devnull"] = os.stat("/dev/null").st_rdev
        out["ptmx"] = os.readlink("/dev/ptmx")
        out["fd"] = os.readlink("/dev/fd")
        out["stdin"] = os.readlink("/dev/stdin")
        out["stderr"] = os.readlink("/dev/stderr")
        out["procsys_mi"] = mountinfo_at("/proc/sys")
        out["n_root_mounts"] = sum(1 for mi in mountinfo.parse_mountinfo()
                                   if mi["mountpoint"] == "/")
        return out

    out = run_in_child(child)
    assert out["cwd"] == "/"
    assert out["n_root_mounts"] == 1, "the old root must be detached"
    assert out["/"]["options"][0] == "ro"
    assert out["/proc"]["fstype"] == "proc"
    assert out["/dev"]["fstype"] == "tmpfs"
    assert "mode=755" in out["/dev"]["super_options"]
    assert {"rw", "nosuid"} <= set(out["/dev"]["options"])
    assert "relatime" not in out["/dev"]["options"]  # strictatime
    assert out["/dev/pts"]["fstype"] == "devpts"
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= set(out["/dev/pts"]["super_options"])
    assert {"nosuid", "nodev", "noexec"} <= set(out["/dev/shm"]["options"])
    assert out["/dev/mqueue"]["fstype"] == "mqueue"
    assert out["/sys"]["fstype"] == "sysfs" and out["/sys"]["options"][0] == "ro"
    assert out["etc"] == "EROFS"
    assert out["shm"] == "ok"
    assert out["procsys"] == "EROFS"
    assert out["procsys_mi"]["options"][0] == "ro"
    assert out["sysfw"] == []
    assert out["keys"] == out["devnull"] == os.makedev(1, 3)
    assert out["ptmx"] == "pts/ptmx"
    assert out["fd"] == "/proc/self/fd"
    assert out["stdin"] == "/proc/self/fd/0" and out["stderr"] == "/proc/self/fd/2"


# --- option families ----------------------------------------------------------------------

@pytest.mark.parametrize("options,want,unwanted", [
    (["ro"], {"ro"}, set()),
    (["ro", "rw"], {"rw"}, {"ro"}),
    (["nosuid", "nodev", "noexec"], {"nosuid", "nodev", "noexec"}, set()),
    (["nosuid", "suid", "nodev", "dev", "noexec", "exec"], set(), {"nosuid", "nodev", "noexec"}),
    (["noatime"], {"noatime"}, {"relatime"}),
    (["noatime", "atime"], set(), {"noatime"}),
    (["nodiratime"], {"nodiratime"}, set()),
    (["nodiratime", "diratime"], set(), {"nodiratime"}),
    (["strictatime"], set(), {"relatime", "noatime"}),
    (["relatime"], {"relatime"}, set()),
    (["nosymfollow"], {"nosymfollow"}, set()),
    (["nosymfollow", "symfollow"], set(), {"nosymfollow"}),
])
def test_bind_mount_flags(rootfs, tmp_path, options, want, unwanted):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    spec = minimal_spec([{"destination": "/mnt/b", "type": "bind", "source": str(src),
                          "options": ["rbind", *options]}])

    def child():
        setup_all(spec, rootfs)
        return {"mi": mountinfo_at("/mnt/b"), "f": open("/mnt/b/f").read()}

    out = run_in_child(child)
    assert out["f"] == "hello"
    opts = set(out["mi"]["options"])
    assert want <= opts, opts
    assert not (unwanted & opts), opts


@pytest.mark.parametrize("options,want", [
    (["sync"], "sync"), (["dirsync"], "dirsync"), (["lazytime"], "lazytime"),
])
def test_superblock_flags_on_tmpfs(rootfs, options, want):
    spec = minimal_spec([{"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                          "options": options}])

    def child():
        setup_all(spec, rootfs)
        return mountinfo_at("/mnt/t")

    mi = run_in_child(child)
    assert want in mi["super_options"]


def test_sync_async_and_accepted_flags(rootfs):
    """async undoes sync; mand/nomand, iversion, silent/loud, defaults are accepted."""
    spec = minimal_spec([{"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                          "options": ["sync", "async", "nomand", "iversion", "noiversion",
                                      "silent", "loud", "defaults", "norelatime",
                                      "nostrictatime", "nolazytime"]}])

    def child():
        setup_all(spec, rootfs)
        return mountinfo_at("/mnt/t")

    mi = run_in_child(child)
    assert "sync" not in mi["super_options"]


def test_remount_option_on_existing_mount(rootfs):
    spec = minimal_spec([
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
         "options": ["remount", "nosuid", "size=2m"]},
    ])

    def child():
        setup_all(spec, rootfs)
        return [mi for mi in mountinfo.parse_mountinfo() if mi["mountpoint"] == "/mnt/t"]

    mis = run_in_child(child)
    assert len(mis) == 1
    assert "size=2048k" in mis[0]["super_options"] and "nosuid" in mis[0]["options"]


@pytest.fixture
def nested_src(tmp_path):
    """A host dir with a tmpfs submount, mounted inside the child (unshared) only."""
    src = tmp_path / "nested"
    (src / "sub").mkdir(parents=True)
    return src


def test_recursive_attributes(rootfs, nested_src):
    spec = minimal_spec([
        {"destination": "/mnt/plain", "type": "bind", "source": str(nested_src),
         "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/mnt/rec", "type": "bind", "source": str(nested_src),
         "options": ["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnoatime",
                     "rnosymfollow"]},
    ])

    def child():
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(nested_src / "sub"), "tmpfs", 0, "size=1m")
        setup_all(spec, rootfs)
        return {p: mountinfo_at(p)["options"] for p in
                ("/mnt/plain", "/mnt/plain/sub", "/mnt/rec", "/mnt/rec/sub")}

    out = run_in_child(child)
    assert {"ro", "nosuid"} <= set(out["/mnt/plain"])
    assert "rw" in out["/mnt/plain/sub"] and "nosuid" not in out["/mnt/plain/sub"]
    for p in ("/mnt/rec", "/mnt/rec/sub"):
        assert {"ro", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"} <= set(out[p]), p


def test_recursive_clear_attributes(rootfs, nested_src):
    spec = minimal_spec([
        {"destination": "/mnt/rec", "type": "bind", "source": str(nested_src),
         "options": ["rbind", "rro", "rrw", "rnosuid", "rsuid", "rnoatime", "ratime",
                     "rstrictatime"]},
    ])

    def child():
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(nested_src / "sub"), "tmpfs", sc.MS_NOSUID | sc.MS_NOATIME,
                 "size=1m")
        setup_all(spec, rootfs)
        return {p: mountinfo_at(p)["options"] for p in ("/mnt/rec", "/mnt/rec/sub")}

    out = run_in_child(child)
    for p, opts in out.items():
        assert "rw" in opts and "nosuid" not in opts, (p, opts)
        assert "noatime" not in opts and "relatime" not in opts, (p, opts)


def test_non_recursive_bind_leaves_submounts_out(rootfs, nested_src):
    spec = minimal_spec([{"destination": "/mnt/b", "type": "bind", "source": str(nested_src),
                          "options": ["bind"]}])

    def child():
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(nested_src / "sub"), "tmpfs", 0, "size=1m")
        setup_all(spec, rootfs)
        return [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()]

    mps = run_in_child(child)
    assert "/mnt/b" in mps and "/mnt/b/sub" not in mps


@pytest.mark.parametrize("prop,tag", [
    ("shared", "shared:"), ("rshared", "shared:"), ("unbindable", "unbindable"),
    ("runbindable", "unbindable"), ("private", None), ("slave", None),
])
def test_mount_propagation(rootfs, tmp_path, prop, tag):
    src = tmp_path / "src"
    src.mkdir()
    spec = minimal_spec([{"destination": "/mnt/p", "type": "bind", "source": str(src),
                          "options": ["rbind", prop]}])

    def child():
        setup_all(spec, rootfs)
        return mountinfo_at("/mnt/p")["optional"]

    optional = run_in_child(child)
    if tag is None:
        assert optional == []
    else:
        assert any(o.startswith(tag) for o in optional), optional


def test_slave_of_shared_source(rootfs, tmp_path):
    """A bind of a shared mount made `slave` gets a master: peer group."""
    src = tmp_path / "src"
    src.mkdir()
    spec = minimal_spec([{"destination": "/mnt/p", "type": "bind", "source": str(src),
                          "options": ["rbind", "slave"]}])

    def child():
        sc.mount(None, "/", None, sc.MS_PRIVATE | sc.MS_REC)
        sc.mount("tmpfs", str(src), "tmpfs", 0, "size=1m")
        sc.mount(None, str(src), None, sc.MS_SHARED)
        spec2 = copy.deepcopy(spec)
        spec2["linux"]["rootfsPropagation"] = "rshared"
        rootfs_mod.prepare_rootfs(config.parse(spec2), rootfs, userns=False)
        mi = [m for m in mountinfo.parse_mountinfo()
              if m["mountpoint"] == os.path.join(os.path.realpath(rootfs), "mnt/p")][-1]
        return mi["optional"]

    optional = run_in_child(child)
    assert any(o.startswith("master:") for o in optional), optional


@pytest.mark.parametrize("prop,tag", [
    ("shared", "shared:"), ("rshared", "shared:"), ("slave", None), ("rslave", None),
    ("private", None), ("rprivate", None), ("unbindable", "unbindable"),
])
def test_rootfs_propagation(rootfs, prop, tag):
    spec = minimal_spec(rootfsPropagation=prop)

    def child():
        setup_all(spec, rootfs)
        return mountinfo_at("/")["optional"]

    optional = run_in_child(child)
    if tag is None:
        assert not any(o.startswith(("shared:", "unbindable")) for o in optional), optional
    else:
        assert any(o.startswith(tag) for o in optional), optional


def test_rootfs_parent_made_private_when_shared(rootfs, tmp_path):
    """A shared parent of the rootfs would make pivot_root fail and leak the rootfs bind
    to its peers: runc's rootfsParentMountPrivate."""
    spec = minimal_spec(rootfsPropagation="rshared")

    def child():
        sc.mount(None, "/", None, sc.MS_SHARED | sc.MS_REC)
        setup_all(spec, rootfs)
        return mountinfo_at("/")["optional"]

    optional = run_in_child(child)
    assert any(o.startswith("shared:") for o in optional)


# --- file binds, tmpfs, destinations ------------------------------------------------------

def test_bind_file_onto_file(rootfs, tmp_path):
    f = tmp_path / "hostname"
    f.write_text("from-host\n")
    spec = minimal_spec([
        {"destination": "/etc/hostname", "type": "bind", "source": str(f), "options": ["ro"]},
        {"destination": "/new/dir/file.txt", "type": "bind", "source": str(f),
         "options": ["bind"]},
    ])

    def child():
        setup_all(spec, rootfs)
        return {"a": open("/etc/hostname").read(), "b": open("/new/dir/file.txt").read(),
                "isfile": os.path.isfile("/new/dir/file.txt"),
                "w": can_write("/etc/hostname")}

    out = run_in_child(child)
    assert out == {"a": "from-host\n", "b": "from-host\n", "isfile": True, "w": "EROFS"}
    assert f.read_text() == "from-host\n"


def test_relative_bind_source_uses_cwd(rootfs, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").write_text("rel")
    spec = minimal_spec([{"destination": "/data", "type": "bind", "source": "data",
                          "options": ["rbind"]}])
    rootfs_mod.check(spec, str(tmp_path))

    def child():
        os.chdir(tmp_path)
        setup_all(spec, rootfs)
        return open("/data/x").read()

    assert run_in_child(child) == "rel"


def test_relative_bind_source_uses_bundle(rootfs, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").write_text("bundle")
    spec = minimal_spec([{"destination": "/data", "type": "bind", "source": "data",
                          "options": ["rbind"]}])

    def child():
        os.chdir("/")
        rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False, bundle=str(tmp_path))
        rootfs_mod.enter_rootfs(rootfs)
        rootfs_mod.finish_rootfs(config.parse(spec))
        return open("/data/x").read()

    assert run_in_child(child) == "bundle"


def test_tmpfs_size_and_mode(rootfs):
    spec = minimal_spec([
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1m", "mode=700", "nodev"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
        {"destination": "/mnt/ro", "type": "tmpfs", "source": "tmpfs",
         "options": ["ro", "mode=755"]},
    ])

    def child():
        setup_all(spec, rootfs)
        return {"mi": mountinfo_at("/mnt/t"), "mode": os.stat("/mnt/t").st_mode,
                "tmpmode": os.stat("/tmp").st_mode, "ro": mountinfo_at("/mnt/ro"),
                "row": can_write("/mnt/ro/x"), "w": can_write("/mnt/t/x")}

    out = run_in_child(child)
    assert {"size=1024k", "mode=700"} <= set(out["mi"]["super_options"])
    assert "nodev" in out["mi"]["options"]
    assert stat.S_IMODE(out["mode"]) == 0o700
    assert stat.S_IMODE(out["tmpmode"]) == 0o1777  # no mode=: the directory's mode is kept
    assert out["ro"]["options"][0] == "ro" and out["row"] == "EROFS"
    assert out["w"] == "ok"


def test_tmpcopyup(rootfs):
    os.makedirs(os.path.join(rootfs, "opt/sub"))
    with open(os.path.join(rootfs, "opt/sub/file"), "w") as f:
        f.write("copied")
    os.symlink("sub/file", os.path.join(rootfs, "opt/link"))
    spec = minimal_spec([{"destination": "/opt", "type": "tmpfs", "source": "tmpfs",
                          "options": ["tmpcopyup"]}])

    def child():
        setup_all(spec, rootfs)
        return {"fs": mountinfo_at("/opt")["fstype"], "f": open("/opt/sub/file").read(),
                "l": os.readlink("/opt/link")}

    assert run_in_child(child) == {"fs": "tmpfs", "f": "copied", "l": "sub/file"}


def test_relative_destination(rootfs):
    spec = minimal_spec([{"destination": "mnt/rel", "type": "tmpfs", "source": "tmpfs"},
                         {"destination": "./var/../srv//x", "type": "tmpfs", "source": "t"}])

    def child():
        setup_all(spec, rootfs)
        return [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()]

    mps = run_in_child(child)
    assert "/mnt/rel" in mps and "/srv/x" in mps


@pytest.mark.parametrize("link", ["ABS", "../../../../../../..", "/"])
def test_symlink_in_destination_stays_inside(rootfs, tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = str(outside) if link == "ABS" else link
    os.symlink(target, os.path.join(rootfs, "evil"))
    spec = minimal_spec([
        {"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/evil/y/file", "type": "bind", "source": "/etc/hostname",
         "options": ["bind"]},
    ])

    def child():
        rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False)
        real = os.path.realpath(rootfs)
        mps = [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()]
        return {"outside": [m for m in mps if m.startswith(str(outside))],
                "inside": [m[len(real):] for m in mps if m.startswith(real + "/")]}

    out = run_in_child(child)
    assert out["outside"] == []
    assert os.listdir(outside) == []
    prefix = str(outside) if link == "ABS" else ""
    assert f"{prefix}/x" in out["inside"] and f"{prefix}/y/file" in out["inside"]
    assert os.path.isdir(os.path.join(rootfs, prefix.lstrip("/"), "x"))


def test_dangling_symlink_is_resolved_inside_root(rootfs):
    os.symlink("/nonexistent/dir", os.path.join(rootfs, "dangling"))
    os.symlink("../../rel/target", os.path.join(rootfs, "etc/dangling2"))
    spec = minimal_spec([{"destination": "/dangling/x", "type": "tmpfs", "source": "t"},
                         {"destination": "/etc/dangling2/y", "type": "tmpfs", "source": "t"}])

    def child():
        setup_all(spec, rootfs)
        return [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()]

    mps = run_in_child(child)
    assert "/nonexistent/dir/x" in mps and "/rel/target/y" in mps
    assert not os.path.exists("/nonexistent/dir")


def test_symlink_loop_in_destination_fails(rootfs):
    os.symlink("loop2", os.path.join(rootfs, "loop1"))
    os.symlink("loop1", os.path.join(rootfs, "loop2"))
    spec = minimal_spec([{"destination": "/loop1/x", "type": "tmpfs", "source": "t"}])
    err = child_error(lambda: rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False))
    assert err["type"] == "SysError" and err["error"].startswith("SysError: mounts[2]")


def test_mount_inside_proc_refused(rootfs):
    spec = minimal_spec([{"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"}])
    err = child_error(lambda: rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False))
    assert err["type"] == "ConfigError" and "inside /proc" in err["error"]
    spec = minimal_spec()
    spec["mounts"][0] = {"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}
    err = child_error(lambda: rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False))
    assert "not of type proc" in err["error"]


def test_proc_file_bind_allowed(rootfs, tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal: 1 kB\n")
    spec = minimal_spec([{"destination": "/proc/meminfo", "type": "bind", "source": str(f),
                          "options": ["bind"]}])

    def child():
        setup_all(spec, rootfs)
        return open("/proc/meminfo").read()

    assert run_in_child(child) == "MemTotal: 1 kB\n"


# --- cgroup mounts ------------------------------------------------------------------------

def _cgroup_spec(cgroupns: bool) -> dict:
    spec = minimal_spec([{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                          "options": ["nosuid", "noexec", "nodev", "ro"]},
                         {"destination": "/sys/fs/cgroup", "type": "cgroup",
                          "source": "cgroup",
                          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}])
    if cgroupns:
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    return spec


@pytest.mark.parametrize("cgroupns", [False, True])
def test_cgroup_mount(rootfs, cgroupns):
    spec = _cgroup_spec(cgroupns)
    hier = cgpaths.cgroup_hierarchies()
    if not hier:
        pytest.skip("no cgroup hierarchies on this host")
    v2only = cgpaths.cgroup2_only()

    def child():
        setup_all(spec, rootfs)
        mis = {mi["mountpoint"]: mi for mi in mountinfo.parse_mountinfo()
               if mi["mountpoint"].startswith("/sys/fs/cgroup")}
        return {"mis": mis, "ls": sorted(os.listdir("/sys/fs/cgroup")),
                "w": can_write("/sys/fs/cgroup/newfile")}

    out = run_in_child(child, extra_unshare=sc.CLONE_NEWCGROUP if cgroupns else 0)
    mis = out["mis"]
    if v2only:
        assert mis["/sys/fs/cgroup"]["fstype"] == "cgroup2"
        return
    assert mis["/sys/fs/cgroup"]["fstype"] == "tmpfs"
    assert mis["/sys/fs/cgroup"]["options"][0] == "ro" and out["w"] == "EROFS"
    for h in hier:
        name = os.path.basename(h["mountpoint"])
        mi = mis[f"/sys/fs/cgroup/{name}"]
        assert mi["fstype"] == h["fstype"]
        assert mi["options"][0] == "ro" and "nosuid" in mi["options"]
        if cgroupns:
            assert mi["root"] == "/"
        else:
            assert mi["root"] == h["own"], (name, mi["root"], h["own"])


# --- no_pivot, root.readonly, masked and read-only paths ----------------------------------

def test_no_pivot(rootfs):
    spec = minimal_spec()

    def child():
        setup_all(spec, rootfs, no_pivot=True)
        return {"bin": os.path.exists("/bin/busybox"), "cwd": os.getcwd(),
                "marker": os.path.exists("/.pyoci-rootfs"),
                "proc": sorted(mi["mountpoint"] for mi in mountinfo.parse_mountinfo()
                               if mi["fstype"] == "proc")}

    out = run_in_child(child)
    assert out["bin"] and out["marker"] and out["cwd"] == "/"
    assert out["proc"] == ["/proc"]  # the host's procfs is not left visible


def test_root_readonly(rootfs):
    spec = minimal_spec([{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}])
    spec["root"]["readonly"] = True

    def child():
        setup_all(spec, rootfs)
        return {"etc": can_write("/etc/x"), "tmp": can_write("/tmp/x"),
                "opts": mountinfo_at("/")["options"]}

    out = run_in_child(child)
    assert out == {"etc": "EROFS", "tmp": "ok", "opts": out["opts"]}
    assert out["opts"][0] == "ro"


def test_root_readonly_false_is_writable(rootfs):
    spec = minimal_spec()

    def child():
        setup_all(spec, rootfs)
        return can_write("/etc/x")

    assert run_in_child(child) == "ok"


def test_masked_and_readonly_paths(rootfs):
    os.makedirs(os.path.join(rootfs, "secret/dir"))
    with open(os.path.join(rootfs, "secret/file"), "w") as f:
        f.write("secret")
    with open(os.path.join(rootfs, "secret/dir/inner"), "w") as f:
        f.write("secret")
    os.makedirs(os.path.join(rootfs, "data/sub"))
    spec = minimal_spec(
        maskedPaths=["/secret/file", "/secret/dir", "/does/not/exist", "/proc/keys",
                     "/proc/acpi"],
        readonlyPaths=["/data", "/proc/sys", "/missing/path"],
    )
    spec["mounts"].append({"destination": "/data/sub", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "noexec", "nodev"]})

    def child():
        setup_all(spec, rootfs)
        return {"file": open("/secret/file").read(),
                "filedev": os.stat("/secret/file").st_rdev,
                "dir": os.listdir("/secret/dir"), "dirw": can_write("/secret/dir/x"),
                "dirmi": mountinfo_at("/secret/dir"),
                "keys": os.stat("/proc/keys").st_rdev,
                "data": can_write("/data/x"), "sub": can_write("/data/sub/x"),
                "datami": mountinfo_at("/data"), "submi": mountinfo_at("/data/sub"),
                "procsys": can_write("/proc/sys/kernel/hostname"),
                "procsysmi": mountinfo_at("/proc/sys")}

    out = run_in_child(child)
    assert out["file"] == "" and out["filedev"] == os.makedev(1, 3)
    assert out["dir"] == [] and out["dirw"] == "EROFS"
    assert out["dirmi"]["fstype"] == "tmpfs" and out["dirmi"]["source"] == "tmpfs"
    assert out["keys"] == os.makedev(1, 3)
    assert out["data"] == "EROFS" and out["datami"]["options"][0] == "ro"
    # submounts of a read-only path are read-only too, keeping nosuid/nodev/noexec
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(out["submi"]["options"])
    assert out["sub"] == "EROFS"
    assert out["procsys"] == "EROFS"
    # proc was mounted without nosuid etc.: read-only keeps exactly its flags
    assert out["procsysmi"]["options"][0] == "ro"


def test_readonly_path_keeps_nosuid_nodev_noexec(rootfs):
    spec = minimal_spec(readonlyPaths=["/mnt/t"])
    spec["mounts"].append({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "noexec"]})

    def child():
        setup_all(spec, rootfs)
        return mountinfo_at("/mnt/t")["options"]

    assert {"ro", "nosuid", "nodev", "noexec"} <= set(run_in_child(child))


@pytest.mark.parametrize("key", ["maskedPaths", "readonlyPaths"])
def test_masked_readonly_refuse_symlinks(rootfs, tmp_path, key):
    """A symlink planted at (or on the way to) a masked/read-only path is never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink("/etc", os.path.join(rootfs, "link"))
    spec = minimal_spec(**{key: ["/link/passwd"]})
    err = child_error(lambda: setup_all(spec, rootfs))
    assert err["type"] == "SysError" and f"linux.{key}[0]" in err["error"]
    spec = minimal_spec(**{key: ["/link"]})
    err = child_error(lambda: setup_all(spec, rootfs))
    assert err["type"] == "SysError"


def test_mask_refuses_fake_dev_null(rootfs):
    spec = minimal_spec(maskedPaths=["/etc/passwd"])
    spec["mounts"] = [spec["mounts"][0]]  # no /dev mount: devices go into the rootfs' /dev

    def child():
        rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False)
        os.unlink(os.path.join(rootfs, "dev/null"))
        with open(os.path.join(rootfs, "dev/null"), "w") as f:
            f.write("not a device")
        rootfs_mod.enter_rootfs(rootfs)
        rootfs_mod.finish_rootfs(config.parse(spec))

    err = child_error(child)
    assert err["type"] == "SysError" and "null device" in err["error"]


def test_dev_read_only(rootfs):
    spec = minimal_spec()
    spec["mounts"][1]["options"].append("ro")

    def child():
        setup_all(spec, rootfs)
        return {"mi": mountinfo_at("/dev")["options"], "null": os.path.exists("/dev/null"),
                "w": can_write("/dev/newfile")}

    out = run_in_child(child)
    assert out["mi"][0] == "ro" and out["null"] and out["w"] == "EROFS"


# --- id-mapped mounts ---------------------------------------------------------------------

def _idmap_src(tmp_path):
    src = tmp_path / "idsrc"
    src.mkdir()
    (src / "owned").write_text("x")
    os.chown(src / "owned", 0, 0)
    return src


def test_idmap_mount(rootfs, tmp_path):
    src = _idmap_src(tmp_path)
    maps = {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 1}]}
    spec = minimal_spec([{"destination": "/mnt/id", "type": "bind", "source": str(src),
                          "options": ["rbind", "idmap"], **maps},
                         {"destination": "/mnt/plain", "type": "bind", "source": str(src),
                          "options": ["rbind"]}])
    rootfs_mod.check(spec, str(tmp_path))

    def child():
        try:
            setup_all(spec, rootfs)
        except SysError as e:
            if "cannot id-map" in str(e):
                return {"skip": str(e)}
            raise
        st = os.stat("/mnt/id/owned")
        return {"uid": st.st_uid, "gid": st.st_gid, "plain": os.stat("/mnt/plain/owned").st_uid,
                "mi": mountinfo_at("/mnt/id")["options"]}

    out = run_in_child(child)
    if "skip" in out:
        pytest.skip(f"backing filesystem refuses id-mapping: {out['skip']}")
    assert (out["uid"], out["gid"], out["plain"]) == (1000, 2000, 0)
    assert "idmapped" in out["mi"]
    assert os.stat(src / "owned").st_uid == 0


def test_ridmap_maps_submounts(rootfs, tmp_path):
    src = _idmap_src(tmp_path)
    (src / "sub").mkdir()
    maps = {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}]}
    spec = minimal_spec([{"destination": "/mnt/r", "type": "bind", "source": str(src),
                          "options": ["rbind", "ridmap"], **maps},
                         {"destination": "/mnt/i", "type": "bind", "source": str(src),
                          "options": ["rbind", "idmap"], **maps}])

    def child():
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(src / "sub"), "tmpfs", 0, "size=1m,uid=0")
        try:
            setup_all(spec, rootfs)
        except SysError as e:
            if "cannot id-map" in str(e):
                return {"skip": str(e)}
            raise
        return {p: os.stat(p).st_uid for p in ("/mnt/r/sub", "/mnt/i/sub", "/mnt/i")}

    out = run_in_child(child)
    if "skip" in out:
        pytest.skip(f"backing filesystem refuses id-mapping: {out['skip']}")
    assert out == {"/mnt/r/sub": 1000, "/mnt/i/sub": 0, "/mnt/i": 1000}


def test_idmap_tree_prepared_on_host_for_userns_init(rootfs, tmp_path):
    """In a user namespace the init cannot id-map the host filesystem: the host side
    prepares the detached tree (prepare_idmapped_mounts) and the init moves it in place."""
    src = _idmap_src(tmp_path)
    spec = minimal_spec([{"destination": "/mnt/id", "type": "bind", "source": str(src),
                          "options": ["rbind", "idmap"]}])
    spec["mounts"][1]["options"] = ["nosuid", "mode=755"]
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["mounts"] = [spec["mounts"][1], spec["mounts"][2]]  # no proc: needs a pid ns

    def host_side(pid):
        ufd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
        try:
            fds = mounts.prepare_idmapped_mounts(config.parse(spec), ufd)
        finally:
            os.close(ufd)
        return [fds[1]]

    def child(fds):
        setup_all(spec, rootfs, userns=True, mount_fds={1: fds[0]})
        return os.stat("/mnt/id/owned").st_uid

    try:
        assert run_in_child(child, userns=True, fds_from=host_side) == 0
    except ChildError as e:
        if "cannot id-map" in str(e):
            pytest.skip(f"backing filesystem refuses id-mapping: {e}")
        raise


# --- user namespace -----------------------------------------------------------------------

def test_userns_locked_flags_and_devices(rootfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    spec = minimal_spec([
        {"destination": "/mnt/b", "type": "bind", "source": str(src),
         "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    ])
    spec["mounts"] = spec["mounts"][1:]  # no proc: that needs an owned pid namespace
    spec["mounts"].append({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                           "options": ["ro", "nosuid"]})
    spec["root"]["readonly"] = True
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["maskedPaths"] = ["/etc/passwd", "/home"]
    spec["linux"]["readonlyPaths"] = ["/mnt/b"]

    def child():
        # no procfs in here (it needs an owned pid namespace): look with statvfs and stat;
        # finish_rootfs must not need /proc either
        setup_all(spec, rootfs, userns=True)
        return {"b": os.statvfs("/mnt/b").f_flag, "root": os.statvfs("/").f_flag,
                "t": os.statvfs("/mnt/t").f_flag, "tw": can_write("/mnt/t/x"),
                "passwd": open("/etc/passwd").read(), "home": os.listdir("/home"),
                "homew": can_write("/home/x"),
                "w": can_write("/etc/x"),
                "nulldev": os.stat("/dev/null").st_dev, "devdev": os.stat("/dev").st_dev,
                "nullrdev": os.stat("/dev/null").st_rdev,
                "ptmx": os.readlink("/dev/ptmx"), "pts": os.path.isdir("/dev/pts")}

    out = run_in_child(child, userns=True)
    assert out["b"] & os.ST_RDONLY and out["b"] & os.ST_NOSUID
    assert out["root"] & os.ST_RDONLY and out["w"] == "EROFS"
    assert out["t"] & os.ST_RDONLY and out["t"] & os.ST_NOSUID and out["tw"] == "EROFS"
    assert out["passwd"] == "" and out["home"] == [] and out["homew"] == "EROFS"
    # mknod is refused in a user namespace: /dev/null is the host's node, bind-mounted
    assert out["nullrdev"] == os.makedev(1, 3)
    assert out["nulldev"] != out["devdev"]
    assert out["ptmx"] == "pts/ptmx" and out["pts"]


def test_userns_bind_remount_keeps_locked_flags(rootfs, tmp_path):
    """A mount made nosuid,nodev,noexec by a more privileged namespace has those flags
    locked: the bind's read-only remount must keep them instead of failing (runc)."""
    src = tmp_path / "locked"
    src.mkdir()
    spec = minimal_spec([{"destination": "/mnt/l", "type": "bind", "source": str(src),
                          "options": ["rbind", "ro"]}])
    spec["mounts"] = spec["mounts"][1:]
    spec["linux"]["namespaces"].append({"type": "user"})

    def pre():
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(src), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "size=1m")

    def child():
        setup_all(spec, rootfs, userns=True)
        return os.statvfs("/mnt/l").f_flag

    flags = run_in_child(child, userns=True, before=pre)
    for f in (os.ST_RDONLY, os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
        assert flags & f, (hex(flags), f)


# --- check() ------------------------------------------------------------------------------

def _spec_with(mount=None, **linux) -> dict:
    spec = minimal_spec([mount] if mount else [])
    spec["linux"].update(linux)
    return spec


@pytest.mark.parametrize("spec,field", [
    (_spec_with({"destination": "", "type": "tmpfs"}), "mounts[2].destination"),
    (_spec_with({"type": "tmpfs"}), "mounts[2].destination"),
    (_spec_with({"destination": "/x", "type": 3}), "mounts[2].type"),
    (_spec_with({"destination": "/x", "type": "tmpfs", "options": "ro"}), "mounts[2].options"),
    (_spec_with({"destination": "/x", "type": "bind", "source": "/no/such/source"}),
     "mounts[2].source"),
    (_spec_with({"destination": "/x", "type": "bind"}), "mounts[2].source"),
    (_spec_with({"destination": "/x", "type": "tmpfs", "options": ["idmap"]}),
     "mounts[2].options"),
    (_spec_with({"destination": "/x", "type": "bind", "source": "/etc",
                 "options": ["rbind", "idmap"]}), "mounts[2].options"),
    (_spec_with({"destination": "/x", "type": "bind", "source": "/etc", "options": ["rbind"],
                 "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}), "mounts[2]"),
    (_spec_with({"destination": "/x", "type": "bind", "source": "/etc", "options": ["idmap"],
                 "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}],
                 "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
     "mounts[2].uidMappings[0].size"),
    (_spec_with({"destination": "/x", "type": "bind", "source": "/etc", "options": ["idmap"],
                 "uidMappings": [{"containerID": 0, "hostID": -1, "size": 1}],
                 "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
     "mounts[2].uidMappings[0].hostID"),
    (_spec_with({"destination": "/x", "type": "proc", "options": ["tmpcopyup"]}),
     "mounts[2].options"),
    (_spec_with(rootfsPropagation="sideways"), "linux.rootfsPropagation"),
    (_spec_with(maskedPaths=["relative/path"]), "linux.maskedPaths[0]"),
    (_spec_with(readonlyPaths=[3]), "linux.readonlyPaths[0]"),
    (_spec_with(devices=[{"path": "/dev/x", "type": "q", "major": 1, "minor": 1}]),
     "linux.devices[0].type"),
    (_spec_with(devices=[{"path": "/dev/x", "type": "c", "minor": 1}]),
     "linux.devices[0].major"),
    (_spec_with(devices=[{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]),
     "linux.devices[0].path"),
])
def test_check_errors(tmp_path, spec, field):
    with pytest.raises(ConfigError) as ei:
        rootfs_mod.check(spec, str(tmp_path))
    assert str(ei.value).startswith(field), str(ei.value)
    assert "\n" not in str(ei.value)


def test_check_accepts_runc_config_and_known_options(tmp_path):
    spec = base_config()
    spec["linux"]["rootfsPropagation"] = "rslave"
    opts = [o for o in mounts.FLAG_OPTIONS] + list(mounts.PROPAGATION_OPTIONS) + \
        list(mounts.RECURSIVE_OPTIONS)
    spec["mounts"].append({"destination": "/b", "type": "bind", "source": "/etc",
                           "options": opts})
    spec["mounts"].append({"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                           "options": ["size=1m", "uid=5", "tmpcopyup", "whatever=1"]})
    spec["mounts"].append({"destination": "/c", "source": "cgroup", "type": "cgroup"})
    spec["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                                {"path": "/dev/fifo", "type": "p"}]
    rootfs_mod.check(spec, str(tmp_path))
    parsed = mounts.parse_mounts(config.parse(spec))
    assert parsed[-2].data == "size=1m,uid=5,whatever=1" and parsed[-2].copyup


def test_parse_mount_flags():
    m = mounts.parse_mount({"destination": "x/../y", "options": ["rbind", "ro", "nosuid",
                                                                 "rshared", "rro", "rnoatime"]},
                           0)
    assert m.destination == "/y" and m.bind
    assert m.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID
    assert m.propagation == [sc.MS_SHARED | sc.MS_REC]
    assert m.attr_set == sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOATIME
    assert m.attr_clr == sc.MOUNT_ATTR__ATIME


def test_bind_mount_ignores_filesystem_data_as_runc(runtime, bundle_factory, config, tmp_path):
    """runtime-tools' mounts test adds nosuid,strictatime,mode=755,size=1k to every mount:
    filesystem data means nothing to a bind mount, runc ignores it (pyoci logs it at debug
    level) and the flags still apply."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                             "options": ["rbind", "nosuid", "strictatime", "mode=755",
                                         "size=1k"]})
    config["process"]["args"] = ["sh", "-c", "cat /mnt/f; grep ' /mnt ' /proc/self/mountinfo"]
    b = bundle_factory(config)
    log = tmp_path / "log"
    r = runtime("--debug", "--log", str(log), "run", "-b", b, "bd")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "data"
    opts = out[1].split()[5].split(",")
    assert "nosuid" in opts and "mode=755" not in out[1] and "size=1k" not in out[1], out[1]
    if runtime.name == "pyoci":
        assert "ignoring mode=755,size=1k for a bind mount" in log.read_text()


def _root_propagation(rt, b: str) -> list[str] | None:
    """The propagation tags of / in a container (shared, master, unbindable; [] private),
    None when it did not run."""
    r = rt("run", "-b", b, "rp")
    if r.returncode != 0:
        return None
    fields = r.stdout.split(" - ")[0].split()[6:]
    return sorted(f.split(":")[0] for f in fields)


@pytest.mark.parametrize("prop", ["rprivate", "rslave", "rshared", "runbindable", "private",
                                  "shared"])
def test_recursive_rootfs_propagation_as_runc(pyoci, runc, bundle_factory, config, prop):
    """rootfsPropagation rprivate/rshared/rslave/runbindable (the upstream schema lists only
    the non-recursive forms): runc and crun take them, docker and containerd's CRI send them.
    / gets the propagation runc gives it, except where runc departs from the spec: shared
    (runc leaves / private) and runbindable (runc fails: it makes / unbindable before binding
    the rootfs onto itself)."""
    config["linux"]["rootfsPropagation"] = prop
    config["process"]["args"] = ["sh", "-c", "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' "
                                 "/proc/self/mountinfo"]
    b = bundle_factory(config)
    mine, theirs = _root_propagation(pyoci, b), _root_propagation(runc, b)
    if prop == "runbindable":
        assert theirs is None and mine == ["unbindable"], (mine, theirs)
    elif prop in ("shared", "rshared"):
        # runc 1.1 leaves / private (conformance: rootfs_propagation); the spec says shared
        assert mine == ["shared"], (mine, theirs)
    else:
        assert mine is not None and mine == theirs, (mine, theirs)


def test_target_swapped_during_setup_stays_inside(rootfs, tmp_path):
    """CVE-2021-30465: while the mounts are made, a path on the way to their destinations is
    exchanged (renameat2 RENAME_EXCHANGE, as fast as a thread can) between a directory and a
    symlink to a host directory, as a container sharing that volume would. runc checked the
    path and then mounted by name; here every target is resolved once inside the root and
    mounted through its fd: nothing ever lands in, or is created in, the host directory."""
    import ctypes
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = os.path.join(rootfs, "evil")
    link = os.path.join(rootfs, "evil-link")
    os.mkdir(evil)
    os.symlink(str(outside), link)
    stop = threading.Event()
    swaps = [0]

    def swap():
        while not stop.is_set():
            if libc.renameat2(at_fdcwd, evil.encode(), at_fdcwd, link.encode(),
                              rename_exchange) == 0:
                swaps[0] += 1

    spec = minimal_spec([{"destination": f"/evil/m{i}/x", "type": "tmpfs", "source": "tmpfs"}
                         for i in range(20)])

    def child():
        try:
            rootfs_mod.prepare_rootfs(config.parse(spec), rootfs, userns=False)
        except (ConfigError, SysError, OSError):
            pass     # a destination found mid-swap may be refused: that is fine too
        return [mi["mountpoint"] for mi in mountinfo.parse_mountinfo()
                if mi["mountpoint"].startswith(str(outside))]

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        for _ in range(25):
            assert run_in_child(child) == []
    finally:
        stop.set()
        t.join()
    assert swaps[0] > 100, swaps
    assert os.listdir(outside) == [], "a directory was created outside the root"
