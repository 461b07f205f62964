"""cgroup v2 resources, set and enforced, for each runtime (runs inside the lane's guest)."""

from __future__ import annotations

import os
import subprocess

import pytest

from lanekit import CGROUP_ROOT, create, keyed, output, read, wait_stopped

MiB = 1024 * 1024


def test_memory_max_and_oom_kill(lane_runtime, lane_config, bundle_factory, cid, tmp_path):
    rt = lane_runtime
    lane_config["process"]["args"] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]
    lane_config["linux"]["resources"]["memory"] = {"limit": 32 * MiB, "swap": 32 * MiB}
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    assert read(f"{cg}/memory.max") == str(32 * MiB)
    assert read(f"{cg}/memory.swap.max") == "0"
    rt("start", cid, check=True)
    wait_stopped(rt, cid)
    assert int(keyed(f"{cg}/memory.events")["oom_kill"]) >= 1
    assert int(read(f"{cg}/memory.peak")) <= 32 * MiB


def test_pids_max_and_fork_failure(lane_runtime, lane_config, bundle_factory, cid, tmp_path):
    rt = lane_runtime
    # forks until the limit refuses one: ash then exits with "can't fork"
    lane_config["process"]["args"] = ["sh", "-c", "while :; do sleep 1000 & done"]
    lane_config["linux"]["resources"]["pids"] = {"limit": 8}
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    assert read(f"{cg}/pids.max") == "8"
    rt("start", cid, check=True)
    wait_stopped(rt, cid)
    assert int(keyed(f"{cg}/pids.events")["max"]) >= 1
    assert "fork" in output(str(tmp_path), cid)[1]


def test_cpu_max_and_cpuset(lane_runtime, lane_config, bundle_factory, cid, tmp_path):
    rt = lane_runtime
    lane_config["process"]["args"] = ["true"]
    lane_config["linux"]["resources"]["cpu"] = {"quota": 50000, "period": 100000, "cpus": "0"}
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    assert read(f"{cg}/cpu.max") == "50000 100000"
    assert read(f"{cg}/cpuset.cpus") == "0"


def test_io_weight(lane_runtime, lane_config, bundle_factory, cid, tmp_path):
    rt = lane_runtime
    lane_config["process"]["args"] = ["true"]
    lane_config["linux"]["resources"]["blockIO"] = {"weight": 500}
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    if os.path.exists(f"{cg}/io.bfq.weight"):
        assert read(f"{cg}/io.bfq.weight").split()[-1] == "500"
    else:
        # runc's blkio -> io.weight conversion: 1 + (w - 10) * 9999 / 990
        assert keyed(f"{cg}/io.weight")["default"] == str(1 + (500 - 10) * 9999 // 990)


def test_io_max(lane_runtime, lane_config, bundle_factory, cid, tmp_path, loop_device):
    rt = lane_runtime
    major, minor = loop_device
    lane_config["process"]["args"] = ["true"]
    lane_config["linux"]["resources"]["blockIO"] = {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": MiB}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    lines = [ln.split() for ln in read(f"{cg}/io.max").splitlines()]
    mine = [ln for ln in lines if ln and ln[0] == f"{major}:{minor}"]
    assert mine, f"no io.max line for {major}:{minor}: {lines}"
    assert f"rbps={MiB}" in mine[0] and "wiops=100" in mine[0]


def test_hugetlb_limit(lane_runtime, lane_config, bundle_factory, cid, tmp_path):
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages in this kernel")
    rt = lane_runtime
    lane_config["process"]["args"] = ["true"]
    lane_config["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB",
                                                            "limit": 4 * MiB}]
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    assert read(f"{cg}/hugetlb.2MB.max") == str(4 * MiB)


def test_pause_resume_freezes_cgroup(lane_runtime, lane_config, bundle_factory, cid,
                                     tmp_path):
    rt = lane_runtime
    lane_config["process"]["args"] = ["sleep", "1000"]
    cg = create(rt, bundle_factory(lane_config), cid, str(tmp_path))
    rt("start", cid, check=True)
    rt("pause", cid, check=True)
    assert rt.state(cid)["status"] == "paused"
    assert read(f"{cg}/cgroup.freeze") == "1"
    assert keyed(f"{cg}/cgroup.events")["frozen"] == "1"
    rt("resume", cid, check=True)
    assert rt.state(cid)["status"] == "running"
    assert read(f"{cg}/cgroup.freeze") == "0"
    assert keyed(f"{cg}/cgroup.events")["frozen"] == "0"


@pytest.mark.parametrize("allow", [False, True], ids=["deny", "allow"])
def test_device_rule(lane_runtime, lane_config, bundle_factory, cid, allow):
    """A device node the config creates (c 1:11, /dev/kmsg's numbers) is opened or refused per
    the config's device rules. (c 1:3 /dev/null cannot be denied this way: runc and crun append
    their default device allowances after the config's rules.)"""
    rt = lane_runtime
    lane_config["process"]["args"] = [
        "sh", "-c", "if echo lane >/dev/lane-kmsg; then echo OPENED; else echo DENIED; fi"]
    lane_config["linux"]["devices"] = [{"path": "/dev/lane-kmsg", "type": "c", "major": 1,
                                        "minor": 11, "fileMode": 0o666, "uid": 0, "gid": 0}]
    lane_config["linux"]["resources"]["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": allow, "type": "c", "major": 1, "minor": 11, "access": "rw"},
    ]
    r = rt("run", "--bundle", bundle_factory(lane_config), cid)
    assert r.returncode == 0, r.stderr
    if allow:
        assert r.stdout.strip() == "OPENED", r.stderr
    else:
        assert r.stdout.strip() == "DENIED"
        assert "Operation not permitted" in r.stderr


def test_systemd_driver_memory_and_pids(systemd_runtime, config, bundle_factory, cid,
                                        tmp_path):
    rt = systemd_runtime
    config["process"]["args"] = ["sleep", "1000"]
    config["linux"]["cgroupsPath"] = f"system.slice:pyoci-lane:{cid}"
    config["linux"]["resources"]["memory"] = {"limit": 64 * MiB}
    config["linux"]["resources"]["pids"] = {"limit": 20}
    cg = create(rt, bundle_factory(config), cid, str(tmp_path))
    scope = f"{CGROUP_ROOT}/system.slice/pyoci-lane-{cid}.scope"
    # crun puts the process in a "container" child of the (delegated) scope and writes the
    # limits there itself; runc (and pyoci, runc-compatible) set them as unit properties
    assert cg in (scope, f"{scope}/container")
    assert read(f"{cg}/memory.max") == str(64 * MiB)
    assert read(f"{cg}/pids.max") == "20"
    unit = subprocess.run(["systemctl", "show", "-p", "ActiveState,MemoryMax,TasksMax",
                           f"pyoci-lane-{cid}.scope"], capture_output=True, text=True)
    assert "ActiveState=active" in unit.stdout
    if rt.name != "crun":
        assert f"MemoryMax={64 * MiB}" in unit.stdout
        assert "TasksMax=20" in unit.stdout
