"""The cgroup v1/hybrid driver against the host's real cgroups, plus the package entry point
and the pure helpers (path rules, device rule emulation, parsers).

Every cgroup a test makes is removed by its fixture, and every process it starts is killed
and waited for by PID, even when the test fails."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from pyoci import cgroups
from pyoci.cgroups import common, paths
from pyoci.cgroups.v1 import (V1Manager, device_state, device_transition,
                              parse_devices_list, _blkio_entries)
from pyoci.errors import ConfigError, SysError, UnsupportedError

MODE = cgroups.mode() if os.path.isdir("/sys/fs/cgroup") else "none"
needs_v1 = pytest.mark.skipif(os.geteuid() != 0 or MODE not in ("v1", "hybrid"),
                              reason="needs root on a cgroup v1 or hybrid host")
PY = sys.executable
MiB = 1 << 20


def _name(prefix: str = "pyoci-e1") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _read(d: str, f: str) -> str:
    with open(os.path.join(d, f)) as fh:
        return fh.read().strip()


def _proc_cgroups(pid: int) -> dict[str, str]:
    return paths.own_cgroups(f"/proc/{pid}/cgroup")


class Env:
    """Managers and processes made by one test, torn down in the right order."""

    def __init__(self) -> None:
        self.managers: list[V1Manager] = []
        self.procs: list[subprocess.Popen] = []
        self.extra_dirs: list[str] = []

    def manager(self, cgroups_path: str | None = None, cid: str | None = None) -> V1Manager:
        m = cgroups.new_manager(cgroups_path, cid or _name())
        assert isinstance(m, V1Manager)
        self.managers.append(m)
        try:
            m.create()
        finally:
            self.extra_dirs.extend(m.created)
        return m

    def spawn(self, m: V1Manager, argv: list[str], **kw) -> subprocess.Popen:
        """Start argv already inside m's cgroups (it joins them before exec)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, preexec_fn=lambda: m.add(os.getpid()), **kw)
        self.procs.append(p)
        return p

    def run(self, m: V1Manager, code: str) -> subprocess.CompletedProcess:
        """Run a small python program inside m's cgroups and wait for it."""
        p = self.spawn(m, [PY, "-S", "-c", code], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=120)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def cleanup(self) -> None:
        for m in self.managers:
            for d in [m.paths.get("freezer")]:
                if d and os.path.exists(os.path.join(d, "freezer.state")):
                    common.try_write(d, "freezer.state", "THAWED")
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    f.close()
        for m in self.managers:
            try:
                m.destroy()
            except Exception:  # noqa: BLE001 - the safety net below removes what is left
                pass
        # every directory a test's managers created (or the test made), deepest first
        for d in sorted(set(self.extra_dirs), key=lambda s: s.count("/"), reverse=True):
            if os.path.isdir(d):
                try:
                    common.rmdir_tree(d)
                except SysError:
                    pass


@pytest.fixture
def env():
    e = Env()
    yield e
    e.cleanup()


# --- pure helpers --------------------------------------------------------------------------

@pytest.mark.parametrize("given,want", [
    ("", ""), (None, ""), ("/a/b/", "/a/b"), ("/a/../../b", "/b"), ("a/b", "a/b"),
    ("a/../../../b", "b"), ("../x", "x"), ("./a//b/.", "a/b"),
])
def test_clean_path_confines_relative_paths(given, want):
    assert paths.clean_path(given) == want


def test_inner_path_defaults_to_the_container_id():
    assert paths.inner_path(None, "c1") == "c1"
    assert paths.inner_path("", "c1") == "c1"
    assert paths.inner_path("/x/y", "c1") == "/x/y"
    with pytest.raises(ConfigError, match="linux.cgroupsPath"):
        paths.inner_path(5, "c1")  # type: ignore[arg-type]


MOUNTINFO = """\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 /ctr /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 20 0:27 / /tmp/with\\040space rw - tmpfs tmpfs rw
"""
PROC_CGROUP = """\
4:memory:/user/abc
3:cpu,cpuacct:/ctr/inner
2:name=systemd:/init.scope
0::/user.slice
"""


def test_paths_follow_mountinfo_and_own_cgroup(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    pc = tmp_path / "cgroup"
    pc.write_text(PROC_CGROUP)
    mounts = paths.cgroup_mounts(str(mi))
    own = paths.own_cgroups(str(pc))
    assert own == {"memory": "/user/abc", "cpu": "/ctr/inner", "cpuacct": "/ctr/inner",
                   "name=systemd": "/init.scope", "": "/user.slice"}
    v1 = paths.v1_paths("box", "c1", mounts, own)
    # co-mounted cpu,cpuacct share a directory; the mount root /ctr is stripped
    assert v1["cpu"] == v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/inner/box"
    assert v1["memory"] == "/sys/fs/cgroup/memory/user/abc/box"
    assert v1["name=systemd"] == "/sys/fs/cgroup/systemd/init.scope/box"
    assert list(v1)[:2] == ["memory", "cpu"]  # runc's subsystem order
    assert paths.unified_path("box", "c1", mounts, own) == \
        "/sys/fs/cgroup/unified/user.slice/box"
    # absolute: below each mount point, whatever our own cgroup is
    assert paths.v1_paths("/a/b", "c1", mounts, own)["memory"] == "/sys/fs/cgroup/memory/a/b"
    # default: <own>/<id>
    assert paths.v1_paths(None, "c1", mounts, own)["memory"] == \
        "/sys/fs/cgroup/memory/user/abc/c1"


def test_cgroup_mount_source_stays_in_its_hierarchy():
    """The directory a `cgroup` mount binds (no cgroup namespace) is the caller's own cgroup
    in the hierarchy, resolved as the container's are: an own cgroup outside the mounted
    root ("/ab/c" with root "/a", only a string prefix) gives the mount's root, never a path
    that climbs out of the mountpoint (it gave /sys/fs/cgroup/ab/c)."""
    h = {"mountpoint": "/sys/fs/cgroup/memory", "root": "/a", "fstype": "cgroup",
         "own": "/ab/c", "options": ["memory"]}
    assert paths.hierarchy_dir(h) == "/sys/fs/cgroup/memory"
    h["own"] = "/a/b"
    assert paths.hierarchy_dir(h) == "/sys/fs/cgroup/memory/b"
    h["root"], h["own"] = "/", "/x/y"
    assert paths.hierarchy_dir(h) == "/sys/fs/cgroup/memory/x/y"


def test_device_emulation_matches_kernel_rules():
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "m"},
             {"allow": True, "type": "b", "major": 8, "access": "r"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]
    allow_all, exc = device_state(rules)
    assert not allow_all
    assert exc == {("c", "1", "3"): frozenset("rm"), ("b", "8", "*"): frozenset("r")}
    assert parse_devices_list("c 1:3 rm\nb 8:* r\n") == (False, exc)
    assert parse_devices_list("a *:* rwm\n") == (True, {})
    # both deny-by-default: only the differences are written, denies first
    cur = parse_devices_list("c 1:3 rwm\nc 1:5 rwm\n")
    assert device_transition(cur, (False, exc)) == [
        ("devices.deny", "c 1:3 w"), ("devices.deny", "c 1:5 rwm"),
        ("devices.allow", "b 8:* r")]
    assert device_transition((False, exc), (False, exc)) == []
    # from allow-all: reset first
    assert device_transition((True, {}), (False, exc))[0] == ("devices.deny", "a")
    assert device_transition((False, exc), device_state([{"allow": True}])) == \
        [("devices.allow", "a")]


def test_blkio_stat_parsing():
    text = "8:0 Read 4096\n8:0 Write 0\n8:0 Total 4096\nTotal 4096\n253:1 17\n"
    assert _blkio_entries(text) == [
        {"major": 8, "op": "Read", "value": 4096}, {"major": 8, "op": "Write"},
        {"major": 8, "op": "Total", "value": 4096}, {"major": 253, "minor": 1, "value": 17}]


# --- entry point -------------------------------------------------------------------------

def _mountinfo_fstype(mp: str) -> str | None:
    with open("/proc/self/mountinfo") as f:
        found = None
        for line in f:
            pre, _, post = line.partition(" - ")
            if pre.split()[4] == mp:
                found = post.split()[0]
        return found


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup"), reason="no /sys/fs/cgroup")
def test_mode_matches_mounts():
    top = _mountinfo_fstype("/sys/fs/cgroup")
    if top == "cgroup2":
        assert cgroups.mode() == "v2"
    elif _mountinfo_fstype("/sys/fs/cgroup/unified") == "cgroup2":
        assert cgroups.mode() == "hybrid"
    else:
        assert cgroups.mode() == "v1"


@needs_v1
def test_new_manager_and_from_state_dispatch():
    m = cgroups.new_manager(None, "c-dispatch")
    assert isinstance(m, V1Manager) and m.driver == "v1"
    d = json.loads(json.dumps(m.to_state()))
    m2 = cgroups.from_state(d)
    assert isinstance(m2, V1Manager)
    assert m2.paths == m.paths and m2.unified == m.unified and m2.created == []
    assert all(not os.path.exists(p) for p in m.paths.values())  # nothing touched
    if MODE == "hybrid":
        assert m.unified and m.unified.endswith("/c-dispatch")
    with pytest.raises(SysError, match="unknown cgroup driver"):
        cgroups.from_state({"driver": "nope"})
    with pytest.raises(SysError):
        cgroups.from_state({})


# --- placement -----------------------------------------------------------------------------

@needs_v1
def test_default_path_is_own_cgroup_plus_id(env):
    cid = _name()
    m = env.manager(None, cid)
    p = env.spawn(m, ["sleep", "1000"])
    got = _proc_cgroups(p.pid)
    mine = paths.own_cgroups()
    for sub in m.paths:
        assert got[sub] == os.path.join(mine[sub], cid), sub
    if MODE == "hybrid":
        assert got[""] == os.path.join(mine[""], cid)
    # the memory controller's own cgroup may be nested: the container is below it
    assert m.paths["memory"] == os.path.join(paths.own_dir("memory"), cid)


@needs_v1
def test_relative_path_is_below_own_cgroup(env):
    rel = f"{_name()}/inner"
    m = env.manager(rel)
    p = env.spawn(m, ["sleep", "1000"])
    got = _proc_cgroups(p.pid)
    mine = paths.own_cgroups()
    for sub in m.paths:
        assert got[sub] == os.path.normpath(os.path.join(mine[sub], rel)), sub


@needs_v1
def test_absolute_path_is_below_hierarchy_root(env):
    ab = f"/{_name()}/box"
    m = env.manager(ab)
    p = env.spawn(m, ["sleep", "1000"])
    got = _proc_cgroups(p.pid)
    for sub in m.paths:
        assert got[sub] == ab, sub
    assert m.paths["memory"] == f"/sys/fs/cgroup/memory{ab}" or \
        m.paths["memory"].endswith(ab)


@needs_v1
def test_create_records_what_it_made_and_destroy_removes_only_that(env):
    parent = _name()
    # a pre-existing parent in the pids hierarchy (as if made by someone else)
    pre = os.path.join(paths.own_dir("pids"), parent)
    os.mkdir(pre)
    env.extra_dirs.append(pre)
    m = env.manager(f"{parent}/c1")
    assert pre not in m.created
    assert m.paths["pids"] in m.created
    assert os.path.join(paths.own_dir("memory"), parent) in m.created
    # a sibling container below the same parents
    m2 = env.manager(f"{parent}/c2")
    assert not any(d.endswith(parent) for d in m2.created)
    m.destroy()
    assert all(not os.path.exists(d) for d in m.paths.values())
    assert os.path.isdir(pre)                      # not ours: kept
    busy_parent = os.path.dirname(m2.paths["memory"])
    assert os.path.isdir(busy_parent)             # ours, but still in use: kept...
    assert busy_parent in m.created               # ...and still ours
    m2.destroy()
    assert all(not os.path.exists(d) for d in m2.paths.values())
    m.destroy()                                   # now the parents go too
    assert not os.path.exists(busy_parent) and m.created == []
    assert os.path.isdir(pre)
    m.destroy()  # idempotent


@needs_v1
def test_destroy_removes_nested_cgroups_and_retries(env):
    m = env.manager()
    nested = os.path.join(m.paths["pids"], "sub", "subsub")
    os.makedirs(nested)
    p = env.spawn(m, ["sleep", "1000"])
    with pytest.raises(SysError, match="remove cgroup"):
        V1Manager.from_state(m.to_state()).destroy()  # busy: a live task
    p.kill()
    p.wait()
    cgroups.from_state(json.loads(json.dumps(m.to_state()))).destroy()
    for d in m.created:
        assert not os.path.exists(d), d


@needs_v1
def test_cpuset_of_a_new_cgroup_is_copied_from_parent(env):
    m = env.manager(f"{_name()}/leaf")
    parent = os.path.dirname(os.path.dirname(m.paths["cpuset"]))
    for f in ("cpuset.cpus", "cpuset.mems"):
        assert _read(m.paths["cpuset"], f) == _read(parent, f) != ""


# --- resources -------------------------------------------------------------------------

@needs_v1
def test_apply_writes_limits(env):
    m = env.manager()
    ncpu = os.cpu_count() or 1
    res = {
        "memory": {"limit": 96 * MiB, "reservation": 64 * MiB, "swap": 128 * MiB,
                   "swappiness": 10, "kernel": 32 * MiB, "kernelTCP": 16 * MiB,
                   "useHierarchy": True},
        "cpu": {"shares": 512, "quota": 20000, "period": 50000, "burst": 1000,
                "cpus": "0" if ncpu == 1 else f"0-{ncpu - 1}", "mems": "0", "idle": 0},
        "pids": {"limit": 33},
    }
    m.apply(res)
    mem, cpu = m.paths["memory"], m.paths["cpu"]
    assert int(_read(mem, "memory.limit_in_bytes")) == 96 * MiB
    assert int(_read(mem, "memory.soft_limit_in_bytes")) == 64 * MiB
    if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
        assert int(_read(mem, "memory.memsw.limit_in_bytes")) == 128 * MiB
    assert _read(mem, "memory.swappiness") == "10"
    assert _read(cpu, "cpu.shares") == "512"
    assert _read(cpu, "cpu.cfs_quota_us") == "20000"
    assert _read(cpu, "cpu.cfs_period_us") == "50000"
    if os.path.exists(os.path.join(cpu, "cpu.cfs_burst_us")):
        assert _read(cpu, "cpu.cfs_burst_us") == "1000"
    assert _read(m.paths["cpuset"], "cpuset.cpus") == res["cpu"]["cpus"]
    assert _read(m.paths["pids"], "pids.max") == "33"
    # unlimited values
    m.apply({"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": 0}})
    assert int(_read(mem, "memory.limit_in_bytes")) > 1 << 60
    assert _read(cpu, "cpu.cfs_quota_us") == "-1"
    assert _read(m.paths["pids"], "pids.max") == "max"


@needs_v1
def test_apply_realtime(env):
    m = env.manager()
    cpu = m.paths["cpu"]
    if not os.path.exists(os.path.join(cpu, "cpu.rt_runtime_us")):
        pytest.skip("kernel without CONFIG_RT_GROUP_SCHED")
    m.apply({"cpu": {"realtimePeriod": 500000, "realtimeRuntime": 5000}})
    assert _read(cpu, "cpu.rt_period_us") == "500000"
    assert _read(cpu, "cpu.rt_runtime_us") == "5000"


@needs_v1
def test_apply_blkio(env):
    m = env.manager()
    d = m.paths["blkio"]
    dev = next((b for b in sorted(os.listdir("/sys/block"))
                if not b.startswith(("loop", "ram", "zram"))), None)
    if dev is None:
        pytest.skip("no block device")
    major, minor = (int(x) for x in open(f"/sys/block/{dev}/dev").read().split(":"))
    res = {"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor,
                                                  "rate": 1048576}],
                       "throttleWriteIOPSDevice": [{"major": major, "minor": minor,
                                                    "rate": 300}]}}
    weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight")
                        if os.path.exists(os.path.join(d, f))), None)
    if weight_file:
        res["blockIO"]["weight"] = 300
    m.apply(res)
    assert f"{major}:{minor} 1048576" in _read(d, "blkio.throttle.read_bps_device")
    assert f"{major}:{minor} 300" in _read(d, "blkio.throttle.write_iops_device")
    if weight_file:
        assert "300" in _read(d, weight_file)
    if not os.path.exists(os.path.join(d, "blkio.leaf_weight")):
        with pytest.raises(UnsupportedError, match="linux.resources.blockIO.leafWeight"):
            m.apply({"blockIO": {"leafWeight": 300}})


@needs_v1
def test_update_grows_memory_and_swap_in_the_right_order(env):
    m = env.manager()
    mem = m.paths["memory"]
    if not os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
        pytest.skip("no swap accounting")
    m.apply({"memory": {"limit": 32 * MiB, "swap": 48 * MiB}})
    # growing both above the old memsw needs memsw written first
    m.apply({"memory": {"limit": 200 * MiB, "swap": 300 * MiB}})
    assert int(_read(mem, "memory.limit_in_bytes")) == 200 * MiB
    assert int(_read(mem, "memory.memsw.limit_in_bytes")) == 300 * MiB
    # shrinking both needs memory first
    m.apply({"memory": {"limit": 16 * MiB, "swap": 24 * MiB}})
    assert int(_read(mem, "memory.limit_in_bytes")) == 16 * MiB
    assert int(_read(mem, "memory.memsw.limit_in_bytes")) == 24 * MiB
    # -1 alone lifts both
    m.apply({"memory": {"limit": -1}})
    assert int(_read(mem, "memory.memsw.limit_in_bytes")) > 1 << 60


@needs_v1
def test_check_before_update_refuses_limit_below_usage(env):
    m = env.manager()
    r = env.spawn(m, [PY, "-S", "-c",
                      "import sys\nb = bytearray(24 << 20)\nprint('ok', flush=True)\n"
                      "sys.stdin.read()"],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert r.stdout.readline().strip() == "ok"
    usage = int(_read(m.paths["memory"], "memory.usage_in_bytes"))
    assert usage >= 20 * MiB
    with pytest.raises(ConfigError, match="linux.resources.memory.limit: .*checkBeforeUpdate"):
        m.apply({"memory": {"limit": 8 * MiB, "checkBeforeUpdate": True}})
    assert int(_read(m.paths["memory"], "memory.limit_in_bytes")) > 1 << 60
    m.apply({"memory": {"limit": usage + 64 * MiB, "checkBeforeUpdate": True}})
    assert int(_read(m.paths["memory"], "memory.limit_in_bytes")) >= usage + 64 * MiB


@needs_v1
def test_disable_oom_killer_is_written(env):
    m = env.manager()
    m.apply({"memory": {"disableOOMKiller": True}})
    assert "oom_kill_disable 1" in _read(m.paths["memory"], "memory.oom_control")
    m.apply({"memory": {"disableOOMKiller": False}})
    assert "oom_kill_disable 0" in _read(m.paths["memory"], "memory.oom_control")


@needs_v1
def test_pids_limit_is_enforced(env):
    m = env.manager()
    m.apply({"pids": {"limit": 1}})
    r = env.run(m, "import os\ntry:\n    pid = os.fork()\nexcept OSError as e:\n"
                   "    print('EAGAIN' if e.errno == 11 else e)\nelse:\n"
                   "    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n"
                   "    print('forked')\n")
    assert r.stdout.strip() == "EAGAIN", r
    assert int(_read(m.paths["pids"], "pids.events").split()[-1]) >= 1 \
        if os.path.exists(os.path.join(m.paths["pids"], "pids.events")) else True
    m.apply({"pids": {"limit": 5}})
    assert env.run(m, "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
                      "os.waitpid(pid, 0)\nprint('forked')").stdout.strip() == "forked"


@needs_v1
def test_memory_limit_oom_kills_and_is_counted(env):
    m = env.manager()
    res = {"memory": {"limit": 32 * MiB}}
    if os.path.exists(os.path.join(m.paths["memory"], "memory.memsw.limit_in_bytes")):
        res["memory"]["swap"] = 32 * MiB
    m.apply(res)
    assert m.oom_count() == 0
    r = env.run(m, "x = []\nfor i in range(64):\n    x.append(bytearray(8 << 20))\n"
                   "print('survived')")
    assert r.returncode == -signal.SIGKILL, r
    assert "survived" not in r.stdout
    assert m.oom_count() >= 1
    assert m.stats()["memory"]["usage"]["max"] == 32 * MiB  # it hit the limit


@needs_v1
def test_devices_deny_all_keeps_runc_defaults(env):
    m = env.manager()
    st = os.stat("/dev/kmsg") if os.path.exists("/dev/kmsg") else None
    if st is None:
        pytest.skip("no /dev/kmsg to test a non-default device with")
    probe = ("import os\nfor p in ('/dev/null', '/dev/zero', '/dev/kmsg'):\n"
             "    try:\n        os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))\n"
             "        print(p, 'ok')\n    except OSError as e:\n"
             "        print(p, e.errno)\n")
    assert env.run(m, probe).stdout.split("\n")[2] == "/dev/kmsg ok"  # no rules yet
    m.apply({"devices": [{"allow": False, "access": "rwm"}]})
    lines = env.run(m, probe).stdout.splitlines()
    assert lines == ["/dev/null ok", "/dev/zero ok", f"/dev/kmsg {errno.EPERM}"]
    listed = _read(m.paths["devices"], "devices.list").splitlines()
    assert "c 1:3 rwm" in listed and "c 136:* rwm" in listed and "b *:* m" in listed
    # an allow rule for it, after the deny-all
    kmsg = {"allow": True, "type": "c", "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "access": "r"}
    m.apply({"devices": [{"allow": False, "access": "rwm"}, kmsg]})
    assert env.run(m, probe).stdout.splitlines()[2] == "/dev/kmsg ok"
    # an update without `devices` keeps the rules
    m2 = V1Manager.from_state(m.to_state())
    m2.apply({"pids": {"limit": 50}})
    assert env.run(m, probe).stdout.splitlines()[2] == "/dev/kmsg ok"
    # and a later update with devices replaces them
    m2.apply({"devices": [{"allow": False, "access": "rwm"}]})
    assert env.run(m, probe).stdout.splitlines()[2] == f"/dev/kmsg {errno.EPERM}"


@needs_v1
def test_first_apply_without_devices_denies_by_default(env):
    m = env.manager()
    m.apply(None)
    listed = _read(m.paths["devices"], "devices.list").splitlines()
    assert "a *:* rwm" not in listed and "c 1:3 rwm" in listed


@needs_v1
@pytest.mark.skipif(MODE != "hybrid", reason="needs a hybrid host")
def test_unified_keys_on_hybrid(env):
    m = env.manager()
    m.apply({"unified": {"cgroup.max.descendants": "7"}})
    assert _read(m.unified, "cgroup.max.descendants") == "7"
    v1_only = next(s for s in ("memory", "cpu", "pids") if not m._unified_has(s))
    with pytest.raises(UnsupportedError, match=f"linux.resources.unified.{v1_only}"):
        m.check({"unified": {f"{v1_only}.max": "1"}})
    with pytest.raises(ConfigError, match="linux.resources.unified"):
        m.check({"unified": {"../x": "1"}})


@needs_v1
def test_unified_is_refused_without_cgroup2(env):
    m = V1Manager({"memory": "/nonexistent/pyoci"}, unified=None)
    with pytest.raises(UnsupportedError, match="linux.resources.unified: .*cgroup v1"):
        m.check({"unified": {"cgroup.max.depth": "1"}})


@pytest.fixture
def restore_unified_subtree():
    """Undo what enabling a v2 controller on the unified root does, after the test."""
    root = paths.unified_mount().mountpoint if paths.unified_mount() else None
    before = _read(root, "cgroup.subtree_control").split() if root else []
    yield
    if root:
        for ctrl in _read(root, "cgroup.subtree_control").split():
            if ctrl not in before:
                common.try_write(root, "cgroup.subtree_control", f"-{ctrl}")


@needs_v1
def test_hugepage_limits(restore_unified_subtree, env):
    sizes = common.hugepage_sizes()
    if not sizes:
        pytest.skip("no huge pages")
    m = env.manager()
    if "hugetlb" not in m.paths and not m._unified_has("hugetlb"):
        with pytest.raises(UnsupportedError, match="hugepageLimits"):
            m.check({"hugepageLimits": [{"pageSize": sizes[0], "limit": 0}]})
        return
    m.apply({"hugepageLimits": [{"pageSize": sizes[0], "limit": 8 * MiB}]})
    if "hugetlb" in m.paths:
        assert int(_read(m.paths["hugetlb"], f"hugetlb.{sizes[0]}.limit_in_bytes")) == 8 * MiB
    else:
        assert int(_read(m.unified, f"hugetlb.{sizes[0]}.max")) == 8 * MiB
    assert sizes[0] in m.stats()["hugetlb"]


@needs_v1
@pytest.mark.parametrize("res,field", [
    ({"memory": {"limit": "1g"}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": -5}}, "linux.resources.memory.limit"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
    ({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}}, "linux.resources.memory.swap"),
    ({"memory": {"disableOOMKiller": 1}}, "linux.resources.memory.disableOOMKiller"),
    ({"cpu": {"cpus": "0-x"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "3-1"}}, "linux.resources.cpu.mems"),
    ({"cpu": {"shares": True}}, "linux.resources.cpu.shares"),
    ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle"),
    ({"pids": {"limit": "many"}}, "linux.resources.pids.limit"),
    ({"blockIO": {"weight": 5000}}, "linux.resources.blockIO.weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8}]}},
     r"linux.resources.blockIO.throttleReadBpsDevice\[0\].minor"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
     r"linux.resources.hugepageLimits\[0\].pageSize"),
    ({"devices": [{"allow": True, "type": "x"}]}, r"linux.resources.devices\[0\].type"),
    ({"devices": [{"allow": True, "access": "rwx"}]}, r"linux.resources.devices\[0\].access"),
    ({"devices": [{"type": "c"}]}, r"linux.resources.devices\[0\].allow"),
    ({"network": {"classID": -1}}, "linux.resources.network.classID"),
    ({"memory": []}, "linux.resources.memory"),
])
def test_check_names_the_bad_field(res, field):
    m = cgroups.new_manager(None, "c-check")
    with pytest.raises(ConfigError, match=field):
        m.check(res)


@needs_v1
def test_check_refuses_controllers_that_are_not_mounted():
    m = cgroups.new_manager(None, "c-check")
    missing = {"net_cls": {"network": {"classID": 0x100001}},
               "net_prio": {"network": {"priorities": [{"name": "lo", "priority": 1}]}},
               "rdma": {"rdma": {"mlx5_0": {"hcaHandles": 3}}}}
    tested = 0
    for sub, res in missing.items():
        if sub not in m.paths:
            with pytest.raises(UnsupportedError, match="linux.resources"):
                m.check(res)
            tested += 1
    bare = V1Manager({"cpu": "/nonexistent/x"})
    with pytest.raises(UnsupportedError, match="linux.resources.memory: the memory"):
        bare.check({"memory": {"limit": MiB}})
    with pytest.raises(UnsupportedError, match="linux.resources.pids.limit"):
        bare.check({"pids": {"limit": 5}})
    bare.check({"memory": {"limit": 0}, "cpu": {"shares": 2}})  # nothing to do: accepted


# --- freezer, signals, processes ------------------------------------------------------

@needs_v1
def test_freeze_and_thaw(env):
    m = env.manager()
    p = env.spawn(m, [PY, "-S", "-c", "import sys\nfor l in sys.stdin:\n"
                                       "    print(l.strip(), flush=True)"],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    p.stdin.write("a\n")
    p.stdin.flush()
    assert p.stdout.readline() == "a\n"
    assert not m.frozen()
    m.freeze()
    assert m.frozen()
    assert cgroups.from_state(m.to_state()).frozen()
    if "freezer" in m.paths:
        assert _read(m.paths["freezer"], "freezer.state") == "FROZEN"
    p.stdin.write("b\n")
    p.stdin.flush()
    m.thaw()
    assert not m.frozen()
    assert p.stdout.readline() == "b\n"  # it runs again


@needs_v1
def test_pids_lists_nested_cgroups(env):
    m = env.manager()
    a = env.spawn(m, ["sleep", "1000"])
    b = env.spawn(m, ["sleep", "1000"])
    sub = os.path.join(m.paths["pids"], "nested")
    os.mkdir(sub)
    common.write_file(sub, "cgroup.procs", b.pid)
    assert sorted(m.pids()) == sorted([a.pid, b.pid])
    assert m.stats()["pids"]["current"] == 2


@needs_v1
def test_kill_all_signals_every_process(env):
    m = env.manager()
    ps = [env.spawn(m, ["sleep", "1000"]) for _ in range(3)]
    sub = os.path.join(m.paths["freezer"] if "freezer" in m.paths else m.paths["pids"], "n")
    os.mkdir(sub)
    common.write_file(sub, "cgroup.procs", ps[2].pid)
    m.kill_all(signal.SIGTERM)
    assert [p.wait(timeout=60) for p in ps] == [-signal.SIGTERM] * 3
    assert m.pids() == []
    assert not m.frozen()


@needs_v1
def test_kill_all_on_a_paused_container(env):
    m = env.manager()
    p = env.spawn(m, ["sleep", "1000"])
    m.freeze()
    m.kill_all(signal.SIGTERM)
    assert m.frozen()           # still paused: the signal waits for resume
    assert p.poll() is None
    m.thaw()
    assert p.wait(timeout=60) == -signal.SIGTERM
    q = env.spawn(m, ["sleep", "1000"])
    m.freeze()
    m.kill_all(signal.SIGKILL)  # SIGKILL works while paused
    assert q.wait(timeout=60) == -signal.SIGKILL


@needs_v1
def test_stats_have_runc_shape(env):
    m = env.manager()
    m.apply({"memory": {"limit": 256 * MiB}, "pids": {"limit": 20}})
    env.run(m, "x = bytearray(8 << 20)\nsum(range(2000000))")
    p = env.spawn(m, ["sleep", "1000"])
    s = m.stats()
    json.dumps(s)
    assert set(s) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                      "network_interfaces"}
    assert s["cpu"]["usage"]["total"] > 0
    assert len(s["cpu"]["usage"]["percpu"]) >= 1
    assert {"kernel", "user"} <= set(s["cpu"]["usage"])
    assert isinstance(s["cpu"]["throttling"], dict)
    assert s["memory"]["usage"]["limit"] == 256 * MiB
    assert s["memory"]["usage"]["max"] >= 8 * MiB
    assert {"usage", "swap", "kernel", "kernelTCP", "raw"} <= set(s["memory"])
    assert all(isinstance(v, int) for v in s["memory"]["raw"].values())
    assert s["pids"] == {"current": 1, "limit": 20}
    assert 0 in s["cpuset"]["cpus"] and "sched_load_balance" in s["cpuset"]
    assert isinstance(s["blkio"], dict) and isinstance(s["hugetlb"], dict)
    p.kill()
    p.wait()
    assert "current" not in m.stats()["pids"]  # omitted when zero, as runc does


@needs_v1
def test_manager_survives_state_round_trip(env):
    m = env.manager()
    m.apply({"pids": {"limit": 9}})
    d = json.loads(json.dumps(m.to_state()))
    assert d["driver"] == "v1" and d["created"] and d["devices_set"]
    m2 = cgroups.from_state(d)
    p = env.spawn(m2, ["sleep", "1000"])
    assert m.pids() == [p.pid]
    with pytest.raises(SysError, match="not 'v1'"):
        V1Manager.from_state({"driver": "v2"})
