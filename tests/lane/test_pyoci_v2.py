"""pyoci on a pure cgroup v2 host (the lane's guest): limits set and enforced, pause/resume
through cgroup.freeze, device rules enforced by pyoci's eBPF program, update, events/stats,
ps, kill --all through cgroup.kill, and nothing left in the hierarchy after delete."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from lanekit import (CGROUP_ROOT, PARENT, create, keyed, make_runtime, output, read,
                     remove_cgroup_tree, wait_stopped)
from support.harness import reap_zombies

MiB = 1024 * 1024


@pytest.fixture
def pyoci():
    rt = make_runtime("pyoci")
    yield rt
    rt.cleanup()
    remove_cgroup_tree(os.path.join(CGROUP_ROOT, PARENT))


def poll(fn, what: str, deadline_s: float = 60.0):
    """Call fn until it returns a true value (the deadline only guards against a hang)."""
    end = time.monotonic() + deadline_s
    while True:
        reap_zombies()
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def started(rt, config, bundle_factory, cid, tmp_path, args) -> str:
    config["process"]["args"] = args
    cg = create(rt, bundle_factory(config), cid, str(tmp_path))
    rt("start", cid, check=True)
    return cg


# --- limits set and enforced ----------------------------------------------------------

def test_memory_limit_oom_kill_and_oom_event(pyoci, lane_config, bundle_factory, cid,
                                              tmp_path):
    lane_config["process"]["args"] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M",
                                      "count=1"]
    lane_config["linux"]["resources"]["memory"] = {"limit": 32 * MiB, "swap": 32 * MiB}
    cg = create(pyoci, bundle_factory(lane_config), cid, str(tmp_path))
    assert read(f"{cg}/memory.max") == str(32 * MiB)
    ev_out = tmp_path / "events.out"
    with open(ev_out, "w") as o, open(tmp_path / "events.err", "w") as e:
        ev = subprocess.Popen(pyoci.argv("events", "--interval", "100ms", cid), stdout=o, stderr=e,
                              stdin=subprocess.DEVNULL)
    try:
        # a first stats event shows events has read the starting OOM count
        poll(lambda: ev_out.read_text().strip(), "a first stats event")
        pyoci("start", cid, check=True)
        rc = ev.wait(timeout=120)             # ends by itself when the container stops
        assert rc == 0, (tmp_path / "events.err").read_text()
    finally:
        if ev.poll() is None:
            ev.kill()
            ev.wait()
    wait_stopped(pyoci, cid)
    assert int(keyed(f"{cg}/memory.events")["oom_kill"]) >= 1
    events = [json.loads(x) for x in ev_out.read_text().splitlines()]
    assert {"type": "oom", "id": cid} in events, events


def test_pids_limit_fork_failure(pyoci, lane_config, bundle_factory, cid, tmp_path):
    lane_config["linux"]["resources"]["pids"] = {"limit": 8}
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path,
                 ["sh", "-c", "while :; do sleep 1000 & done"])
    wait_stopped(pyoci, cid)
    assert read(f"{cg}/pids.max") == "8"
    assert int(keyed(f"{cg}/pids.events")["max"]) >= 1
    assert "fork" in output(str(tmp_path), cid)[1]


def test_cpu_max_written(pyoci, lane_config, bundle_factory, cid, tmp_path):
    from pyoci.cgroups.v2 import cpu_shares_to_weight

    lane_config["linux"]["resources"]["cpu"] = {"quota": 25000, "period": 50000,
                                                "shares": 2048}
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path, ["sleep", "1000"])
    assert read(f"{cg}/cpu.max") == "25000 50000"
    assert read(f"{cg}/cpu.weight") == str(cpu_shares_to_weight(2048))


# --- pause / resume -------------------------------------------------------------------

def test_pause_resume_through_cgroup_freeze(pyoci, lane_config, bundle_factory, cid,
                                            tmp_path):
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path,
                 ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; usleep 20000; done"])
    out = tmp_path / f"{cid}.out"
    poll(lambda: out.stat().st_size > 0, "the counter")
    pyoci("pause", cid, check=True)
    assert pyoci.state(cid)["status"] == "paused"
    assert read(f"{cg}/cgroup.freeze") == "1" and keyed(f"{cg}/cgroup.events")["frozen"] == "1"
    size = out.stat().st_size
    time.sleep(1)                                 # a frozen counter never advances
    assert out.stat().st_size == size
    r = pyoci("pause", cid)
    assert r.returncode == 1 and "container not running" in r.stderr
    pyoci("resume", cid, check=True)
    assert pyoci.state(cid)["status"] == "running"
    assert keyed(f"{cg}/cgroup.events")["frozen"] == "0"
    poll(lambda: out.stat().st_size > size, "the counter to advance")
    r = pyoci("resume", cid)
    assert r.returncode == 1 and "container not paused" in r.stderr


# --- devices --------------------------------------------------------------------------

NULL_PROBE = ["sh", "-c", "if echo x >/dev/null; then echo OPENED; else echo DENIED; fi"]


def test_device_rule_denying_dev_null_is_enforced_by_the_program(pyoci, lane_config,
                                                                 bundle_factory, cid, tmp_path):
    """pyoci's eBPF program for rules that deny c 1:3 refuses /dev/null to a process in the
    container's cgroup. The config alone cannot do it: pyoci, like runc and crun, appends its
    default allowances (which include /dev/null) after the config's rules, so the container
    starts with /dev/null usable; the program is then replaced with one built from the deny
    rule alone, as an update of the device rules would."""
    from pyoci.cgroups import ebpf

    lane_config["linux"]["resources"]["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    ]
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path, ["sleep", "1000"])
    assert [n for _, n in ebpf.attached_programs(cg)] == [ebpf.PROG_NAME]
    pid = pyoci.state(cid)["pid"]
    root = f"/proc/{pid}/root"

    def probe() -> str:
        # a host process joins the container's cgroup (and root) and opens /dev/null there
        r = subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec chroot {root} '
                                        + " ".join(f"'{a}'" for a in NULL_PROBE)],
                           capture_output=True, text=True, timeout=60)
        return r.stdout.strip()

    assert probe() == "OPENED"          # the default rules come after the config's deny
    rules = ebpf.rules_from_spec([{"allow": True, "access": "rwm"},
                                  {"allow": False, "type": "c", "major": 1, "minor": 3,
                                   "access": "rw"}])
    ebpf.set_device_filter(cg, rules)
    assert [n for _, n in ebpf.attached_programs(cg)] == [ebpf.PROG_NAME]
    assert probe() == "DENIED"


def test_device_rule_denies_a_configured_node(pyoci, lane_config, bundle_factory, cid):
    lane_config["process"]["args"] = [
        "sh", "-c", "if echo x >/dev/lane-kmsg; then echo OPENED; else echo DENIED; fi"]
    lane_config["linux"]["devices"] = [{"path": "/dev/lane-kmsg", "type": "c", "major": 1,
                                        "minor": 11, "fileMode": 0o666, "uid": 0, "gid": 0}]
    lane_config["linux"]["resources"]["devices"] = [{"allow": False, "access": "rwm"}]
    r = pyoci("run", "--bundle", bundle_factory(lane_config), cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "DENIED" and "Operation not permitted" in r.stderr


# --- update / stats / ps / kill --all / delete ----------------------------------------

def test_update_and_stats(pyoci, lane_config, bundle_factory, cid, tmp_path):
    from pyoci.cgroups.v2 import cpu_shares_to_weight

    lane_config["linux"]["resources"]["pids"] = {"limit": 50}
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path, ["sleep", "1000"])
    pyoci("update", "--memory", "64m", "--memory-swap", "96m", "--pids-limit", "10",
          "--cpu-quota", "20000", "--cpu-period", "100000", "--cpu-share", "512", cid,
          check=True)
    assert read(f"{cg}/memory.max") == str(64 * MiB)
    if os.path.exists(f"{cg}/memory.swap.max"):
        assert read(f"{cg}/memory.swap.max") == str(32 * MiB)
    assert read(f"{cg}/pids.max") == "10"
    assert read(f"{cg}/cpu.max") == "20000 100000"
    assert read(f"{cg}/cpu.weight") == str(cpu_shares_to_weight(512))
    # a later update merges: the period stays, the memory limit stays
    with open(tmp_path / "res.json", "w") as f:
        json.dump({"cpu": {"quota": 30000}, "memory": {"reservation": 16 * MiB}}, f)
    with open(tmp_path / "res.json") as stdin:
        pyoci("update", "-r", "-", cid, check=True, stdin=stdin)
    assert read(f"{cg}/cpu.max") == "30000 100000"
    assert read(f"{cg}/memory.max") == str(64 * MiB)
    assert read(f"{cg}/memory.low") == str(16 * MiB)

    ev = json.loads(pyoci("events", "--stats", cid, check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    data = ev["data"]
    assert data["memory"]["usage"]["limit"] == 64 * MiB
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"] == {"current": 1, "limit": 10}
    assert data["cpu"]["usage"]["total"] > 0 and "throttling" in data["cpu"]
    assert set(data["memory"]["event_count"]) >= {"oom", "oom_kill"}


def test_ps_and_kill_all(pyoci, lane_config, bundle_factory, cid, tmp_path):
    lane_config["linux"]["namespaces"] = [n for n in lane_config["linux"]["namespaces"]
                                          if n["type"] != "pid"]
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path,
                 ["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    procs = poll(lambda: len(read(f"{cg}/cgroup.procs").split()) == 3
                 and set(map(int, read(f"{cg}/cgroup.procs").split())), "three processes")
    assert set(json.loads(pyoci("ps", "--format", "json", cid, check=True).stdout)) == procs
    table = pyoci("ps", cid, "-o", "pid,comm", check=True).stdout.splitlines()
    assert table[0].split() == ["PID", "COMMAND"] and len(table) == 4
    pyoci("kill", "--all", cid, "KILL", check=True)
    poll(lambda: read(f"{cg}/cgroup.procs") == "", "the cgroup to empty")
    wait_stopped(pyoci, cid)
    assert keyed(f"{cg}/cgroup.events")["populated"] == "0"


def test_cgroup_gone_after_delete(pyoci, lane_config, bundle_factory, cid, tmp_path):
    lane_config["linux"]["resources"]["memory"] = {"limit": 64 * MiB}
    cg = started(pyoci, lane_config, bundle_factory, cid, tmp_path, ["sleep", "1000"])
    pyoci("pause", cid, check=True)
    pyoci("update", "--pids-limit", "5", cid, check=True)
    assert os.path.isdir(cg)
    pyoci("delete", "--force", cid, check=True)
    assert not os.path.exists(cg)
    assert pyoci("state", cid).returncode == 1


def test_features_on_pure_v2(pyoci):
    got = json.loads(pyoci("features", check=True).stdout)["linux"]["cgroup"]
    ctrls = read(f"{CGROUP_ROOT}/cgroup.controllers").split()
    assert got["v1"] is False and got["v2"] is True
    assert got["rdma"] == ("rdma" in ctrls)
