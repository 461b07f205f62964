"""pyoci's linux.resources fields on pure cgroup v2 (the lane's guest) that tests/lane's other
files leave out: cpu burst/idle/mems, hugetlb rsvd, unified, every io.max key, the fields v2
ignores, the ones it refuses (nothing left behind), placement by a relative or empty
cgroupsPath, and the systemd driver's unit properties, update, pause, kill --all and delete
(the `systemd` tests need `lane/run --systemd`). See docs/cgroups.md for the whole matrix."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lanekit import (CGROUP_ROOT, PARENT, SYSTEMD_PID1, create, keyed, make_runtime, read,
                     remove_cgroup_tree, wait_stopped)

MiB = 1024 * 1024


@pytest.fixture
def pyoci():
    rt = make_runtime("pyoci")
    yield rt
    rt.cleanup()
    remove_cgroup_tree(os.path.join(CGROUP_ROOT, PARENT))


@pytest.fixture
def pyoci_systemd():
    if not SYSTEMD_PID1:
        pytest.skip("systemd is not PID 1 (use lane/run --systemd)")
    rt = make_runtime("pyoci", systemd=True)
    yield rt
    rt.cleanup()


def sleeper(config: dict) -> dict:
    config["process"]["args"] = ["sleep", "1000"]
    return config


# --- cgroupfs driver: fields written, ignored, and checkBeforeUpdate through update -------

def test_fields_written_ignored_and_check_before_update(pyoci, lane_config, bundle_factory,
                                                         cid, tmp_path):
    res = lane_config["linux"]["resources"]
    res["cpu"] = {"quota": 50000, "period": 100000, "burst": 20000, "idle": 1, "mems": "0"}
    huge = os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB")
    if huge:
        res["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 * MiB}]
    res["pids"] = {"limit": 20}
    # unified is written last: its pids.max wins over pids.limit
    res["unified"] = {"memory.high": str(48 * MiB), "pids.max": "7"}
    # no cgroup v2 file for these: accepted and ignored, as runc does
    res["memory"] = {"limit": 64 * MiB, "kernel": 32 * MiB, "kernelTCP": 16 * MiB,
                     "swappiness": 10, "disableOOMKiller": True, "useHierarchy": True}
    res["network"] = {"classID": 0x100001, "priorities": [{"name": "lo", "priority": 1}]}
    res["blockIO"] = {"leafWeight": 300}
    cg = create(pyoci, bundle_factory(sleeper(lane_config)), cid, str(tmp_path))
    assert read(f"{cg}/cpu.max") == "50000 100000"
    assert read(f"{cg}/cpu.max.burst") == "20000"
    assert read(f"{cg}/cpu.idle") == "1"
    assert read(f"{cg}/cpuset.mems") == "0"
    if huge:
        assert read(f"{cg}/hugetlb.2MB.max") == str(4 * MiB)
        if os.path.exists(f"{cg}/hugetlb.2MB.rsvd.max"):
            assert read(f"{cg}/hugetlb.2MB.rsvd.max") == str(4 * MiB)
    assert read(f"{cg}/memory.high") == str(48 * MiB)
    assert read(f"{cg}/pids.max") == "7"
    assert read(f"{cg}/memory.max") == str(64 * MiB)
    # checkBeforeUpdate (runc >= 1.2 reads it from --resources): a limit below the usage is
    # refused before anything is written
    pyoci("start", cid, check=True)
    assert int(read(f"{cg}/memory.current")) > 4096
    doc = tmp_path / "res.json"
    doc.write_text(json.dumps({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
    r = pyoci("update", "-r", str(doc), cid)
    assert r.returncode == 1 and "linux.resources.memory.limit" in r.stderr, r.stderr
    assert read(f"{cg}/memory.max") == str(64 * MiB)
    assert pyoci.state(cid)["status"] == "running"
    assert keyed(f"{cg}/memory.events")["oom_kill"] == "0"


def test_io_max_every_key_and_weight_device(pyoci, lane_config, bundle_factory, cid, tmp_path,
                                            loop_device):
    major, minor = loop_device
    dev = {"major": major, "minor": minor}
    lane_config["linux"]["resources"]["blockIO"] = {
        "weight": 200,
        "weightDevice": [{**dev, "weight": 300}],
        "throttleReadBpsDevice": [{**dev, "rate": 2 * MiB}],
        "throttleWriteBpsDevice": [{**dev, "rate": MiB}],
        "throttleReadIOPSDevice": [{**dev, "rate": 200}],
        "throttleWriteIOPSDevice": [{**dev, "rate": 100}],
    }
    cg = create(pyoci, bundle_factory(sleeper(lane_config)), cid, str(tmp_path))
    line = next(ln.split() for ln in read(f"{cg}/io.max").splitlines()
                if ln.startswith(f"{major}:{minor} "))
    assert line[1:] == [f"rbps={2 * MiB}", f"wbps={MiB}", "riops=200", "wiops=100"]
    if os.path.exists(f"{cg}/io.bfq.weight"):
        assert f"{major}:{minor} 300" in read(f"{cg}/io.bfq.weight")
    else:
        # without BFQ, weightDevice has no v2 file (runc skips it too); weight is converted
        assert keyed(f"{cg}/io.weight")["default"] == str(1 + (200 - 10) * 9999 // 990)


# --- refused fields leave nothing -------------------------------------------------------

@pytest.mark.parametrize("res,field", [
    ({"cpu": {"realtimeRuntime": 5000, "realtimePeriod": 500000}},
     "linux.resources.cpu.realtime"),
    ({"rdma": {"mlx5_0": {"hcaHandles": 3}}}, "linux.resources.rdma.mlx5_0"),
], ids=["realtime", "rdma-no-device"])
def test_refused_field_is_one_line_and_leaves_nothing(pyoci, lane_config, bundle_factory, cid,
                                                      tmp_path, res, field):
    lane_config["linux"]["resources"].update(res)
    b = bundle_factory(sleeper(lane_config))
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        r = pyoci("create", "--bundle", b, cid, stdout=out, stderr=err)
    msg = (tmp_path / "err").read_text().strip()
    assert r.returncode == 1
    assert len(msg.splitlines()) == 1 and field in msg, msg
    assert not os.path.exists(f"{CGROUP_ROOT}/{PARENT}/{cid}")
    assert not os.path.exists(os.path.join(pyoci.root, cid))


# --- placement --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["relative", "empty"])
def test_placement_relative_and_empty(pyoci, config, bundle_factory, cid, tmp_path, kind):
    """A relative cgroupsPath (or the id, when empty) is below the caller's own cgroup."""
    with open("/proc/self/cgroup") as f:
        own = next(ln[3:].strip() for ln in f if ln.startswith("0::"))
    inner = f"{PARENT}/{cid}" if kind == "relative" else cid
    config["linux"]["cgroupsPath"] = inner if kind == "relative" else ""
    want = os.path.normpath(f"{CGROUP_ROOT}{own}/{inner}")
    try:
        cg = create(pyoci, bundle_factory(sleeper(config)), cid, str(tmp_path))
        assert cg == want
        pyoci("delete", "--force", cid, check=True)
        assert not os.path.exists(want)
    finally:
        remove_cgroup_tree(want)


# --- systemd driver (lane/run --systemd) ------------------------------------------------

def unit_props(unit: str, *names: str) -> dict[str, str]:
    r = subprocess.run(["systemctl", "show", "-p", ",".join(names), unit],
                       capture_output=True, text=True)
    return dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)


def test_systemd_resource_properties(pyoci_systemd, config, bundle_factory, cid, tmp_path):
    from pyoci.cgroups.v2 import cpu_shares_to_weight

    rt = pyoci_systemd
    config["linux"]["cgroupsPath"] = f"system.slice:pyoci-lane:{cid}"
    res = config["linux"]["resources"]
    res["memory"] = {"limit": 64 * MiB, "reservation": 16 * MiB, "swap": 96 * MiB}
    res["cpu"] = {"shares": 2048, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}
    res["pids"] = {"limit": 20}
    cg = create(rt, bundle_factory(sleeper(config)), cid, str(tmp_path))
    unit = f"pyoci-lane-{cid}.scope"
    assert cg == f"{CGROUP_ROOT}/system.slice/{unit}"
    p = unit_props(unit, "MemoryMax", "MemoryLow", "MemorySwapMax", "CPUWeight",
                   "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec", "TasksMax", "AllowedCPUs",
                   "AllowedMemoryNodes", "Delegate")
    assert p["MemoryMax"] == str(64 * MiB) and p["MemoryLow"] == str(16 * MiB)
    assert p["MemorySwapMax"] == str(32 * MiB)
    assert p["CPUWeight"] == str(cpu_shares_to_weight(2048))
    assert p["CPUQuotaPerSecUSec"] == "500ms" and p["CPUQuotaPeriodUSec"] == "100ms"
    assert p["TasksMax"] == "20" and p["AllowedCPUs"] == "0" and p["AllowedMemoryNodes"] == "0"
    assert p["Delegate"] == "yes"
    # the cgroupfs writes agree
    assert read(f"{cg}/memory.max") == str(64 * MiB) and read(f"{cg}/memory.low") == str(16 * MiB)
    assert read(f"{cg}/cpu.max") == "50000 100000"
    assert read(f"{cg}/cpu.weight") == str(cpu_shares_to_weight(2048))
    assert read(f"{cg}/cpuset.cpus") == "0" and read(f"{cg}/pids.max") == "20"


def test_systemd_update_pause_kill_all_delete(pyoci_systemd, config, bundle_factory, cid,
                                              tmp_path):
    rt = pyoci_systemd
    config["linux"]["cgroupsPath"] = ""               # default: system.slice:pyoci:<id>
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    config["process"]["args"] = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]
    cg = create(rt, bundle_factory(config), cid, str(tmp_path))
    unit = f"pyoci-{cid}.scope"
    assert cg == f"{CGROUP_ROOT}/system.slice/{unit}"
    rt("start", cid, check=True)
    rt("update", "--pids-limit", "9", "--memory", "80m", cid, check=True)
    p = unit_props(unit, "TasksMax", "MemoryMax")
    assert p == {"TasksMax": "9", "MemoryMax": str(80 * MiB)}
    assert read(f"{cg}/pids.max") == "9" and read(f"{cg}/memory.max") == str(80 * MiB)
    rt("pause", cid, check=True)
    assert rt.state(cid)["status"] == "paused"
    assert keyed(f"{cg}/cgroup.events")["frozen"] == "1"
    rt("resume", cid, check=True)
    assert keyed(f"{cg}/cgroup.events")["frozen"] == "0"
    stats = json.loads(rt("events", "--stats", cid, check=True).stdout)["data"]
    assert stats["pids"]["limit"] == 9 and stats["memory"]["usage"]["limit"] == 80 * MiB
    assert len(json.loads(rt("ps", "--format", "json", cid, check=True).stdout)) >= 1
    rt("kill", "--all", cid, "KILL", check=True)
    wait_stopped(rt, cid)
    # systemd stops a scope whose last process is gone and removes its cgroup itself
    assert not os.path.exists(cg) or read(f"{cg}/cgroup.procs") == ""
    rt("delete", cid, check=True)
    assert not os.path.exists(cg)
    assert unit_props(unit, "LoadState")["LoadState"] == "not-found"
