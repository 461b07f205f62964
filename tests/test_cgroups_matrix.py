"""The linux.resources fields and cgroup operations of the v1 (hybrid) driver that
tests/test_cgroups_v1.py and tests/test_ops.py leave unchecked: fields read back after
apply(), the OOM killer disabled and held, every blkio throttle file, weightDevice on a BFQ
loop device, hugetlb rsvd, a container's placement and the removal of every one of its
cgroups at delete, refused fields leaving nothing behind, the update flags the other tests do
not use, and checkBeforeUpdate through `update`. See docs/cgroups.md for the whole matrix.

Every cgroup, process, loop device and container a test makes is removed even when it
fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from pyoci import cgroups
from pyoci.cgroups import common, paths
from pyoci.errors import UnsupportedError

MODE = cgroups.mode() if os.path.isdir("/sys/fs/cgroup") else "none"
needs_v1 = pytest.mark.skipif(os.geteuid() != 0 or MODE not in ("v1", "hybrid"),
                              reason="needs root on a cgroup v1 or hybrid host")
PY = sys.executable
MiB = 1 << 20


def _read(d: str, f: str) -> str:
    with open(os.path.join(d, f)) as fh:
        return fh.read().strip()


def poll(fn, what: str, deadline_s: float = 60.0):
    """Call fn until it returns a true value (the deadline only guards against a hang)."""
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def mgr():
    """A created v1 manager; its processes are killed and its cgroups removed afterwards."""
    made = []
    procs: list[subprocess.Popen] = []

    def make():
        m = cgroups.new_manager(None, f"pyoci-mx-{uuid.uuid4().hex[:10]}")
        made.append(m)
        m.create()
        return m

    make.procs = procs
    yield make
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdout, p.stdin, p.stderr):
            if f:
                f.close()
    for m in made:
        for d in list(m.created):
            if os.path.isdir(d):
                for pid in common.read_procs_recursive(d):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        m.destroy()


def spawn(make, m, code: str) -> subprocess.Popen:
    p = subprocess.Popen([PY, "-S", "-c", code], preexec_fn=lambda: m.add(os.getpid()),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    make.procs.append(p)
    return p


# --- fields read back ---------------------------------------------------------------------

@needs_v1
def test_memory_fields_read_back_and_kmem_ignored(mgr):
    m = mgr()
    d = m.paths["memory"]
    m.apply({"memory": {"limit": 64 * MiB, "kernel": 8 * MiB, "kernelTCP": 4 * MiB,
                        "useHierarchy": True, "swappiness": 0}})
    assert _read(d, "memory.use_hierarchy") == "1"
    assert _read(d, "memory.swappiness") == "0"
    # kernel/kernelTCP are accepted and not written (runc >= 1.0): the kmem limits stay
    for f in ("memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes"):
        if os.path.exists(os.path.join(d, f)):
            assert int(_read(d, f)) > 1 << 60, f


@needs_v1
def test_cpu_idle_and_cpuset_mems_read_back(mgr):
    m = mgr()
    cpu, cpuset = m.paths["cpu"], m.paths["cpuset"]
    if not os.path.exists(os.path.join(cpu, "cpu.idle")):
        pytest.skip("kernel without cpu.idle in cgroup v1")
    mems = _read(os.path.dirname(cpuset), "cpuset.mems").split(",")[0].split("-")[0]
    m.apply({"cpu": {"idle": 1, "mems": mems}})
    assert _read(cpu, "cpu.idle") == "1"
    assert _read(cpuset, "cpuset.mems") == mems
    m.apply({"cpu": {"idle": 0}})
    assert _read(cpu, "cpu.idle") == "0"


@needs_v1
def test_disable_oom_killer_holds_the_task_instead_of_killing_it(mgr):
    m = mgr()
    d = m.paths["memory"]
    res = {"memory": {"limit": 32 * MiB, "disableOOMKiller": True}}
    if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
        res["memory"]["swap"] = 32 * MiB
    m.apply(res)
    p = spawn(mgr, m, "x = []\nfor i in range(12):\n    x.append(bytearray(8 << 20))\n"
                      "print('survived', flush=True)")
    poll(lambda: common.read_keyed(d, "memory.oom_control").get("under_oom") == 1,
         "the task to be held under OOM")
    assert p.poll() is None and m.oom_count() == 0
    # more room: the held task goes on and finishes
    m.apply({"memory": {"limit": 256 * MiB, "swap": 256 * MiB}})
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and out.strip() == "survived"
    assert m.oom_count() == 0


def _block_device() -> tuple[int, int] | None:
    for b in sorted(os.listdir("/sys/block")):
        if not b.startswith(("loop", "ram", "zram")):
            with open(f"/sys/block/{b}/dev") as f:
                ma, mi = f.read().split(":")
            return int(ma), int(mi)
    return None


@needs_v1
def test_blkio_every_throttle_file(mgr):
    dev = _block_device()
    if dev is None:
        pytest.skip("no block device")
    m = mgr()
    d = m.paths["blkio"]
    mm = {"major": dev[0], "minor": dev[1]}
    m.apply({"blockIO": {"throttleReadBpsDevice": [{**mm, "rate": 2 * MiB}],
                         "throttleWriteBpsDevice": [{**mm, "rate": MiB}],
                         "throttleReadIOPSDevice": [{**mm, "rate": 200}],
                         "throttleWriteIOPSDevice": [{**mm, "rate": 100}]}})
    key = f"{dev[0]}:{dev[1]}"
    assert _read(d, "blkio.throttle.read_bps_device") == f"{key} {2 * MiB}"
    assert _read(d, "blkio.throttle.write_bps_device") == f"{key} {MiB}"
    assert _read(d, "blkio.throttle.read_iops_device") == f"{key} 200"
    assert _read(d, "blkio.throttle.write_iops_device") == f"{key} 100"
    if not os.path.exists(os.path.join(d, "blkio.leaf_weight_device")):
        with pytest.raises(UnsupportedError,
                           match=r"blockIO.weightDevice\[0\].leafWeight"):
            m.apply({"blockIO": {"weightDevice": [{**mm, "leafWeight": 300}]}})


@pytest.fixture
def bfq_loop(tmp_path):
    """A loop device with the BFQ scheduler (blkio.bfq.weight_device refuses others)."""
    losetup = shutil.which("losetup")
    if not losetup or not os.path.exists("/dev/loop-control"):
        pytest.skip("no losetup or loop driver")
    img = tmp_path / "loop.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    r = subprocess.run([losetup, "--find", "--show", str(img)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"losetup failed: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        sched = f"/sys/block/{os.path.basename(dev)}/queue/scheduler"
        if "bfq" not in _read(os.path.dirname(sched), "scheduler"):
            pytest.skip("no BFQ I/O scheduler")
        with open(sched, "w") as f:
            f.write("bfq")
        st = os.stat(dev)
        yield os.major(st.st_rdev), os.minor(st.st_rdev)
    finally:
        subprocess.run([losetup, "--detach", dev], check=False)


@needs_v1
def test_blkio_weight_device_on_bfq(mgr, bfq_loop):
    m = mgr()
    d = m.paths["blkio"]
    if not os.path.exists(os.path.join(d, "blkio.bfq.weight_device")):
        pytest.skip("no blkio.bfq.weight_device")
    major, minor = bfq_loop
    m.apply({"blockIO": {"weight": 200,
                         "weightDevice": [{"major": major, "minor": minor, "weight": 300}]}})
    assert _read(d, "blkio.bfq.weight").split()[-1] == "200"
    assert f"{major}:{minor} 300" in _read(d, "blkio.bfq.weight_device").splitlines()


@pytest.fixture
def restore_unified_subtree():
    """Undo enabling a v2 controller on the unified root, after the test."""
    m = paths.unified_mount()
    root = m.mountpoint if m else None
    before = _read(root, "cgroup.subtree_control").split() if root else []
    yield
    if root:
        for ctrl in _read(root, "cgroup.subtree_control").split():
            if ctrl not in before:
                common.try_write(root, "cgroup.subtree_control", f"-{ctrl}")


@needs_v1
def test_hugetlb_limit_and_rsvd(restore_unified_subtree, mgr):
    sizes = common.hugepage_sizes()
    if not sizes:
        pytest.skip("no huge pages")
    m = mgr()
    size, want = sizes[0], 4 * MiB
    m.apply({"hugepageLimits": [{"pageSize": size, "limit": want}]})
    if "hugetlb" in m.paths:
        d, lim, rsvd = m.paths["hugetlb"], "limit_in_bytes", "rsvd.limit_in_bytes"
    else:
        d, lim, rsvd = m.unified, "max", "rsvd.max"
    assert int(_read(d, f"hugetlb.{size}.{lim}")) == want
    if not os.path.exists(os.path.join(d, f"hugetlb.{size}.{rsvd}")):
        pytest.skip("kernel without hugetlb rsvd limits")
    assert int(_read(d, f"hugetlb.{size}.{rsvd}")) == want


# --- real containers: placement, removal, refusals, update --------------------------------

def _container_cgroups(pid: int) -> dict[str, str]:
    return paths.own_cgroups(f"/proc/{pid}/cgroup")


def _dirs_for(inner: str) -> list[str]:
    """Every directory a container with this resolved inner path has, per hierarchy."""
    mounts = paths.cgroup_mounts()
    own = paths.own_cgroups()
    out = list(paths.v1_paths(inner, "x", mounts, own).values())
    u = paths.unified_path(inner, "x", mounts, own)
    return out + ([u] if u else [])


@needs_v1
@pytest.mark.parametrize("kind", ["absolute", "relative", "empty"])
def test_container_placement_and_every_cgroup_gone_after_delete(pyoci, bundle_factory, config,
                                                                 tmp_path, kind):
    cid = f"mx-{uuid.uuid4().hex[:8]}"
    top = f"pyoci-mx-{uuid.uuid4().hex[:8]}"
    given = {"absolute": f"/{top}/{cid}", "relative": f"{top}/{cid}", "empty": ""}[kind]
    config["linux"]["cgroupsPath"] = given
    config["process"]["args"] = ["sleep", "1000"]
    dirs = _dirs_for(given or cid)
    try:
        with open(tmp_path / "out", "w") as o, open(tmp_path / "err", "w") as e:
            pyoci("create", "--bundle", bundle_factory(config), cid, check=True, stdout=o,
                  stderr=e)
        got = _container_cgroups(pyoci.state(cid)["pid"])
        mine = paths.own_cgroups()
        for sub, path in got.items():
            want = given if kind == "absolute" else \
                os.path.normpath(os.path.join(mine.get(sub, "/"), given or cid))
            assert path == want, (sub, path, want)
        assert all(os.path.isdir(d) for d in dirs)
        pyoci("delete", "--force", cid, check=True)
        left = [d for d in dirs if os.path.exists(d)]
        assert left == []
        # the parents pyoci made for a two-level path go too
        if kind != "empty":
            assert not any(os.path.exists(os.path.dirname(d)) for d in dirs)
    finally:
        pyoci("delete", "--force", cid)
        for d in sorted(set(dirs + [os.path.dirname(d) for d in dirs if kind != "empty"]),
                        key=lambda s: -s.count("/")):
            if os.path.isdir(d):
                common.rmdir_tree(d)


@needs_v1
@pytest.mark.parametrize("res,field", [
    ({"network": {"classID": 0x100001}}, "linux.resources.network.classID"),
    ({"network": {"priorities": [{"name": "lo", "priority": 1}]}},
     "linux.resources.network.priorities"),
    ({"rdma": {"mlx5_0": {"hcaHandles": 3}}}, "linux.resources.rdma"),
    ({"unified": {"memory.high": "1000000"}}, "linux.resources.unified.memory.high"),
], ids=["net_cls", "net_prio", "rdma", "unified-v1-only-controller"])
def test_refused_field_is_one_line_and_leaves_nothing(pyoci, bundle_factory, config, tmp_path,
                                                      res, field):
    m = cgroups.new_manager(None, "probe")
    ctrl = {"linux.resources.network.classID": "net_cls",
            "linux.resources.network.priorities": "net_prio",
            "linux.resources.rdma": "rdma"}.get(field)
    if ctrl and ctrl in m.paths:
        pytest.skip(f"{ctrl} is mounted here")
    if field.startswith("linux.resources.unified") and (m.unified is None
                                                        or m._unified_has("memory")):
        pytest.skip("needs a hybrid host whose unified hierarchy lacks memory")
    cid = f"mx-{uuid.uuid4().hex[:8]}"
    config["linux"]["resources"].update(res)
    with open(tmp_path / "out", "w") as o, open(tmp_path / "err", "w") as e:
        r = pyoci("create", "--bundle", bundle_factory(config), cid, stdout=o, stderr=e)
    err = (tmp_path / "err").read_text().strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and field in err, err
    assert not os.path.exists(os.path.join(pyoci.root, cid))
    assert [d for d in _dirs_for(cid) if os.path.exists(d)] == []


def _start(pyoci, bundle_factory, config, tmp_path, args) -> tuple[str, int]:
    cid = f"mx-{uuid.uuid4().hex[:8]}"
    config["process"]["args"] = args
    with open(tmp_path / f"{cid}.out", "w") as o, open(tmp_path / f"{cid}.err", "w") as e:
        pyoci("create", "--bundle", bundle_factory(config), cid, check=True, stdout=o,
              stderr=e)
    pyoci("start", cid, check=True)
    return cid, pyoci.state(cid)["pid"]


def _dir_of(pid: int, sub: str) -> str:
    m = paths.v1_mounts()[sub]
    return paths.resolve(m, _container_cgroups(pid)[sub], ".")


@needs_v1
def test_update_flags_the_other_tests_leave_out(pyoci, bundle_factory, config, tmp_path):
    cid, pid = _start(pyoci, bundle_factory, config, tmp_path, ["sleep", "1000"])
    cpu, cpuset, mem = _dir_of(pid, "cpu"), _dir_of(pid, "cpuset"), _dir_of(pid, "memory")
    args = ["--cpuset-mems", _read(cpuset, "cpuset.mems").split(",")[0].split("-")[0],
            "--memory", "100m", "--kernel-memory", "50m", "--kernel-memory-tcp", "10m"]
    has_memsw = os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes"))
    if has_memsw:
        args += ["--memory-swap", "150m"]
    if os.path.exists(os.path.join(cpu, "cpu.rt_runtime_us")):
        args += ["--cpu-rt-period", "500000", "--cpu-rt-runtime", "0"]
    pyoci("update", *args, cid, check=True)
    assert _read(cpuset, "cpuset.mems") == args[1]
    assert int(_read(mem, "memory.limit_in_bytes")) == 100 * MiB
    if has_memsw:
        assert int(_read(mem, "memory.memsw.limit_in_bytes")) == 150 * MiB
    assert int(_read(mem, "memory.kmem.limit_in_bytes")) > 1 << 60 \
        if os.path.exists(os.path.join(mem, "memory.kmem.limit_in_bytes")) else True
    if "--cpu-rt-period" in args:
        assert _read(cpu, "cpu.rt_period_us") == "500000"
    # --blkio-weight goes to blkio.bfq.weight (no CFQ on current kernels)
    blkio = _dir_of(pid, "blkio")
    if os.path.exists(os.path.join(blkio, "blkio.bfq.weight")):
        pyoci("update", "--blkio-weight", "300", cid, check=True)
        assert _read(blkio, "blkio.bfq.weight").split()[-1] == "300"
    stored = json.loads(_read(os.path.join(pyoci.root, cid), "resources.json"))
    assert "kernel" in stored["memory"]      # kept in the merged document, never written


@needs_v1
def test_update_check_before_update_refuses_a_limit_below_usage(pyoci, bundle_factory, config,
                                                                tmp_path):
    config["linux"]["resources"]["memory"] = {"limit": 256 * MiB}
    cid, pid = _start(pyoci, bundle_factory, config, tmp_path, ["sleep", "1000"])
    mem = _dir_of(pid, "memory")
    usage = int(_read(mem, "memory.usage_in_bytes"))
    assert usage > 4096
    doc = tmp_path / "res.json"
    doc.write_text(json.dumps({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
    r = pyoci("update", "-r", str(doc), cid)
    assert r.returncode == 1 and "checkBeforeUpdate" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert int(_read(mem, "memory.limit_in_bytes")) == 256 * MiB
    assert pyoci.state(cid)["status"] == "running"
    # the flag is a boolean in the JSON document
    doc.write_text(json.dumps({"memory": {"checkBeforeUpdate": 1}}))
    r = pyoci("update", "-r", str(doc), cid)
    assert r.returncode == 1 and "linux.resources.memory.checkBeforeUpdate" in r.stderr
