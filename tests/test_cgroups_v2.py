"""The cgroup v2 driver: pure conversions, and real behaviour on this host's cgroup2 mount
(/sys/fs/cgroup/unified: hugetlb, freeze, kill, events, pids, unified writes, devices).
Enforcement of memory/pids/cpu/io needs a pure v2 host: those tests are marked `lane` and
skip unless /sys/fs/cgroup itself is cgroup2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid

import pytest
from hypothesis import given, strategies as st

from pyoci.cgroups import v2
from pyoci.cgroups.common import CGROUP2_SUPER_MAGIC, fs_magic, read_procs, rmdir_tree
from pyoci.cgroups.v2 import V2Manager
from pyoci.errors import ConfigError, UnsupportedError

from support.child import access_in_cgroup, idle_child, run_child

UNIFIED = "/sys/fs/cgroup/unified"
HYBRID_V2 = os.geteuid() == 0 and fs_magic(UNIFIED) == CGROUP2_SUPER_MAGIC
PURE_V2 = os.geteuid() == 0 and fs_magic("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC

needs_cgroup2 = pytest.mark.skipif(not HYBRID_V2,
                                   reason=f"needs root and a cgroup2 mount at {UNIFIED}")
lane = pytest.mark.lane
needs_pure_v2 = pytest.mark.skipif(not PURE_V2,
                                   reason="needs root on a pure cgroup v2 host "
                                          "(/sys/fs/cgroup is cgroup2): QEMU lane")


# --- conversions -------------------------------------------------------------------------

@pytest.mark.parametrize("shares,weight", [
    (0, 0), (1, 1), (2, 1), (3, 2), (512, 59), (1024, 100), (2048, 174), (4096, 303),
    (100000, 4340), (262143, 10000), (262144, 10000), (300000, 10000)])
def test_cpu_shares_to_weight(shares, weight):
    assert v2.cpu_shares_to_weight(shares) == weight


@pytest.mark.parametrize("shares,weight", [(0, 0), (2, 1), (1024, 39), (262144, 10000)])
def test_cpu_shares_to_weight_linear(shares, weight):
    assert v2.cpu_shares_to_weight_linear(shares) == weight


@given(st.integers(2, 262144), st.integers(2, 262144))
def test_cpu_weight_is_monotonic_and_in_range(a, b):
    wa, wb = v2.cpu_shares_to_weight(a), v2.cpu_shares_to_weight(b)
    assert 1 <= wa <= 10000 and 1 <= wb <= 10000
    if a <= b:
        assert wa <= wb


@pytest.mark.parametrize("blkio,io", [(0, 0), (10, 1), (100, 910), (500, 4950),
                                      (1000, 10000)])
def test_blkio_weight_to_io_weight(blkio, io):
    assert v2.blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize("swap,memory,want", [
    (0, 0, 0), (0, -1, -1), (-1, -1, -1), (-1, 1000, -1), (0, 1000, 0),
    (2000, 1000, 1000), (1000, 1000, 0), (5000, -1, 5000)])
def test_memory_swap_to_v2(swap, memory, want):
    assert v2.memory_swap_to_v2(swap, memory) == want


@pytest.mark.parametrize("swap,memory,msg", [
    (1000, 0, "without memory limit"), (500, 1000, ">= memory limit"),
    (1000, -5, "invalid memory value")])
def test_memory_swap_to_v2_errors(swap, memory, msg):
    with pytest.raises(ConfigError, match=msg):
        v2.memory_swap_to_v2(swap, memory)


def test_small_value_helpers():
    assert [v2.num_to_str(x) for x in (0, -1, 5)] == ["", "max", "5"]
    assert v2.cpu_max_value(None, None) is None
    assert v2.cpu_max_value(50000, None) == "50000 100000"
    assert v2.cpu_max_value(-1, 20000) == "max 20000"
    assert v2.cpu_max_value(0, 20000) == "max 20000"
    assert v2.rdma_line("mlx5_1", {"hcaHandles": 3}) == "mlx5_1 hca_handle=3"
    assert v2.rdma_line("mlx4_0", {"hcaHandles": 1, "hcaObjects": 9}) == \
        "mlx4_0 hca_handle=1 hca_object=9"
    psi = v2.parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=12\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n")
    assert psi == {"some": {"avg10": 1.5, "avg60": 0.0, "avg300": 0.0, "total": 12},
                   "full": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 3}}


@pytest.mark.parametrize("key", ["../memory.max", "a/b", "..", "memory..max", "nodot",
                                 ".hidden", "", "cgroup.procs/x"])
def test_unified_key_validation(key):
    with pytest.raises(ConfigError):
        v2.check_unified_key(key)


def test_unified_key_ok():
    for k in ("memory.max", "cgroup.max.descendants", "hugetlb.2MB.rsvd.max", "io.bfq.weight"):
        v2.check_unified_key(k)


def test_path_must_be_inside_the_hierarchy():
    with pytest.raises(ConfigError, match="outside"):
        V2Manager("/sys/fs/cgroup/../x", "/sys/fs/cgroup")
    assert V2Manager("a/b", "/sys/fs/cgroup").path == "/sys/fs/cgroup/a/b"


def test_state_round_trip():
    m = V2Manager("/sys/fs/cgroup/x/y", created=["/sys/fs/cgroup/x", "/sys/fs/cgroup/x/y"])
    d = json.loads(json.dumps(m.to_state()))
    assert d["driver"] == "v2"
    m2 = V2Manager.from_state(d)
    assert (m2.path, m2.mountpoint, m2.created) == (m.path, m.mountpoint, m.created)


def test_check_validation_without_touching_the_filesystem(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids io hugetlb\n")
    m = V2Manager(str(tmp_path / "c"), str(tmp_path))
    m.check({"memory": {"limit": 1 << 20, "swap": 2 << 20}, "cpu": {"shares": 1024},
             "pids": {"limit": 10}})
    with pytest.raises(UnsupportedError, match=r"cpu\.realtimeRuntime"):
        m.check({"cpu": {"realtimeRuntime": 1000}})
    with pytest.raises(ConfigError, match=r"memory\.swap"):
        m.check({"memory": {"limit": 2 << 20, "swap": 1 << 20}})
    with pytest.raises(ConfigError, match=r"blockIO\.weight"):
        m.check({"blockIO": {"weight": 5}})
    with pytest.raises(ConfigError, match=r"hugepageLimits\[0\]\.pageSize"):
        m.check({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]})
    with pytest.raises(UnsupportedError, match="cpuset controller"):
        m.check({"cpu": {"cpus": "0"}})
    with pytest.raises(UnsupportedError, match="rdma controller"):
        m.check({"rdma": {"mlx5_1": {"hcaHandles": 1}}})
    with pytest.raises(ConfigError, match=r"unified\.\.\./x"):
        m.check({"unified": {"../x": "1"}})
    with pytest.raises(ConfigError, match="hole"):
        m.check({"devices": [{"allow": True, "type": "c", "major": 1, "access": "r"},
                             {"allow": False, "type": "c", "major": 1, "minor": 3,
                              "access": "r"}]})


# --- real cgroup2 (hybrid host's unified mount) -------------------------------------------

@pytest.fixture
def top():
    """A unique top-level test cgroup directory (not created), removed afterwards."""
    path = os.path.join(UNIFIED, f"pyoci-test-{uuid.uuid4().hex[:12]}")
    yield path
    for root, _dirs, _files in os.walk(path):
        for pid in read_procs(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    rmdir_tree(path)


@pytest.fixture
def mgr(top):
    m = V2Manager(os.path.join(top, "ctr"), UNIFIED)
    m.create()
    yield m
    m.kill_all(signal.SIGKILL)


@pytest.fixture
def child():
    """Factory of idle child processes (support.child.idle_child), killed and reaped
    afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(idle_child())


@needs_cgroup2
def test_create_enables_controllers_and_destroy_removes_only_what_it_created(top):
    os.mkdir(top)  # pre-existing parent: not ours
    m = V2Manager(os.path.join(top, "a", "ctr"), UNIFIED)
    m.create()
    assert m.created == [os.path.join(top, "a"), os.path.join(top, "a", "ctr")]
    avail = open(os.path.join(UNIFIED, "cgroup.controllers")).read().split()
    for d in (UNIFIED, top, os.path.join(top, "a")):
        enabled = open(os.path.join(d, "cgroup.subtree_control")).read().split()
        assert set(avail) <= set(enabled), d
    # a sub-cgroup the container made itself goes too
    os.mkdir(os.path.join(m.path, "nested"))
    V2Manager.from_state(m.to_state()).destroy()
    assert not os.path.exists(os.path.join(top, "a"))
    assert os.path.isdir(top)


@needs_cgroup2
def test_destroy_does_not_remove_a_preexisting_cgroup(top):
    path = os.path.join(top, "ctr")
    os.makedirs(path)
    m = V2Manager(path, UNIFIED)
    m.create()
    assert m.created == []
    m.destroy()
    assert os.path.isdir(path)


@needs_cgroup2
def test_add_pids_recursive(mgr, child):
    a, b = child(), child()
    mgr.add(a)
    sub = V2Manager(os.path.join(mgr.path, "sub"), UNIFIED)
    sub.create()
    sub.add(b)
    assert sorted(mgr.pids()) == sorted([a, b])
    assert sub.pids() == [b]
    assert mgr.stats()["pids"]["current"] == 1  # pids.current or cgroup.procs count


@needs_cgroup2
def test_hugetlb_limits(mgr):
    sizes = [s for s in ("2MB", "1GB")
             if os.path.exists(os.path.join(mgr.path, f"hugetlb.{s}.max"))]
    if not sizes:
        pytest.skip("no hugetlb files in the test cgroup")
    limits = [{"pageSize": s, "limit": (i + 1) * (1 << 30)} for i, s in enumerate(sizes)]
    mgr.apply({"hugepageLimits": limits})
    for h in limits:
        got = open(os.path.join(mgr.path, f"hugetlb.{h['pageSize']}.max")).read().strip()
        assert int(got) == h["limit"]
        rsvd = os.path.join(mgr.path, f"hugetlb.{h['pageSize']}.rsvd.max")
        if os.path.exists(rsvd):
            assert int(open(rsvd).read()) == h["limit"]
    st_ = mgr.stats()["hugetlb"]
    assert set(sizes) <= set(st_)
    assert all(v["failcnt"] == 0 for v in st_.values())


@needs_cgroup2
def test_freeze_thaw(mgr, child):
    pid = child()
    mgr.add(pid)
    assert not mgr.frozen()
    mgr.freeze()
    assert mgr.frozen()
    events = open(os.path.join(mgr.path, "cgroup.events")).read()
    assert "frozen 1" in events
    mgr.thaw()
    assert not mgr.frozen()
    assert "frozen 0" in open(os.path.join(mgr.path, "cgroup.events")).read()


@needs_cgroup2
def test_kill_all_sigkill_uses_cgroup_kill(mgr, child):
    pids = [child(), child()]
    for p in pids:
        mgr.add(p)
    mgr.kill_all(signal.SIGKILL)
    for p in pids:
        _, status = os.waitpid(p, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@needs_cgroup2
def test_kill_all_other_signal_reaches_every_process(mgr, child):
    a = child()
    mgr.add(a)
    sub = V2Manager(os.path.join(mgr.path, "sub"), UNIFIED)
    sub.create()
    b = child()
    sub.add(b)
    mgr.kill_all(signal.SIGTERM)
    for p in (a, b):
        _, status = os.waitpid(p, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


@needs_cgroup2
def test_kill_all_on_frozen_cgroup(mgr, child):
    pid = child()
    mgr.add(pid)
    mgr.freeze()
    mgr.kill_all(signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WTERMSIG(status) == signal.SIGKILL


@needs_cgroup2
def test_unified_writes(mgr):
    mgr.apply({"unified": {"cgroup.max.descendants": "7", "cgroup.max.depth": "3"}})
    assert open(os.path.join(mgr.path, "cgroup.max.descendants")).read().strip() == "7"
    assert open(os.path.join(mgr.path, "cgroup.max.depth")).read().strip() == "3"
    with pytest.raises(ConfigError, match="slashes"):
        mgr.apply({"unified": {"sub/cgroup.max.depth": "1"}})
    with pytest.raises(UnsupportedError, match="rdma"):
        mgr.apply({"unified": {"rdma.max": "mlx5_0 hca_handle=1"}})
    # nothing was written outside the container's cgroup
    parent = os.path.dirname(mgr.path)
    assert open(os.path.join(parent, "cgroup.max.depth")).read().strip() == "max"


@needs_cgroup2
def test_unavailable_controllers_are_reported(mgr):
    avail = open(os.path.join(UNIFIED, "cgroup.controllers")).read().split()
    if "memory" in avail:
        pytest.skip("memory controller is available here")
    with pytest.raises(UnsupportedError, match=r"linux\.resources\.memory"):
        mgr.apply({"memory": {"limit": 1 << 26}})


@needs_cgroup2
def test_stats_shape_and_oom_count(mgr, child):
    mgr.add(child())
    s = mgr.stats()
    assert set(s) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
    assert set(s["cpu"]["usage"]) >= {"kernel", "user"}
    assert "limit" in s["memory"]["usage"]
    assert s["pids"]["current"] == 1
    json.dumps(s)
    assert mgr.oom_count() == 0


def _open_in_cgroup(cgroup: str, paths: list[str]) -> list[str]:
    """"ok" or the errno's name of opening each path (read-only) in a child in cgroup."""
    return list(access_in_cgroup(cgroup, [("open", p, os.O_RDONLY) for p in paths]).values())


@needs_cgroup2
def test_devices(mgr):
    from pyoci.cgroups import ebpf

    # create time: no devices in the config -> deny all but runc's default devices
    mgr.apply({})
    assert _open_in_cgroup(mgr.path, ["/dev/null", "/dev/zero", "/dev/kmsg"]) == \
        ["ok", "ok", "EPERM"]
    # an update without devices leaves the program alone
    mgr.apply({"pids": {"limit": 0}})
    assert [n for _, n in ebpf.attached_programs(mgr.path)] == ["pyoci_dev"]
    # an update with devices replaces it (defaults still appended)
    mgr.apply({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 11,
                            "access": "r"}]})
    assert _open_in_cgroup(mgr.path, ["/dev/null", "/dev/kmsg"]) == ["ok", "ok"]
    assert [n for _, n in ebpf.attached_programs(mgr.path)] == ["pyoci_dev"]


# --- enforcement on a pure v2 host (QEMU lane) -------------------------------------------

@pytest.fixture
def pure_mgr():
    m = V2Manager(os.path.join("/sys/fs/cgroup", f"pyoci-test-{uuid.uuid4().hex[:12]}"))
    m.create()
    yield m
    m.kill_all(signal.SIGKILL)
    rmdir_tree(m.path)


def _run_in(m: V2Manager, fn) -> int:
    """The wait status of a child that joins m and runs fn."""
    return run_child(fn, cgroup=m.path)[0]


@lane
@needs_pure_v2
def test_lane_memory_limit_is_enforced(pure_mgr):
    pure_mgr.apply({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert open(os.path.join(pure_mgr.path, "memory.max")).read().strip() == str(32 << 20)

    def hog():
        chunks = []
        for _ in range(256):
            chunks.append(bytearray(1 << 20))

    status = _run_in(pure_mgr, hog)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert pure_mgr.oom_count() >= 1


@lane
@needs_pure_v2
def test_lane_pids_limit_is_enforced(pure_mgr):
    pure_mgr.apply({"pids": {"limit": 1}})

    def fork_one():
        try:
            pid = os.fork()
        except BlockingIOError:
            os._exit(3)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os._exit(4)

    status = _run_in(pure_mgr, fork_one)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3


@lane
@needs_pure_v2
def test_lane_cpu_and_io_files(pure_mgr):
    pure_mgr.apply({"cpu": {"shares": 2048, "quota": 50000, "period": 100000},
                    "blockIO": {"weight": 500}})
    rd = lambda n: open(os.path.join(pure_mgr.path, n)).read().strip()  # noqa: E731
    assert rd("cpu.weight") == "174"
    assert rd("cpu.max") == "50000 100000"
    if os.path.exists(os.path.join(pure_mgr.path, "io.bfq.weight")):
        assert rd("io.bfq.weight").split()[-1] == "500"
    else:
        assert rd("io.weight").split()[-1] == "4950"
