"""pause, resume, update, events, ps and kill --all on real containers (this host's cgroups),
each run with pyoci and runc on the same bundle where runc supports it, and compared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import pytest

from support.harness import reap_zombies

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


# --- helpers --------------------------------------------------------------------------

def new_id() -> str:
    return "ops-" + uuid.uuid4().hex[:10]


def msg(r) -> str:
    """The error message of a failed command: runc's logrus msg="..." or pyoci's line."""
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines, f"no error output (rc={r.returncode})"
    last = lines[-1]
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', last)
    if m:
        return json.loads(f'"{m.group(1)}"')
    return last.split(": ", 1)[1] if last.startswith("pyoci: ") else last


def poll(fn, what: str, deadline_s: float = 30.0):
    """Call fn until it returns a true value (the deadline only guards against a hang)."""
    end = time.monotonic() + deadline_s
    while True:
        reap_zombies()
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def status(rt, cid: str) -> str:
    return rt.state(cid)["status"]


def start_container(rt, bundle_factory, config, args, tmp_path, cid=None, start=True,
                    nopidns=False):
    """create (+ start) a container whose stdout/stderr go to files; returns (id, out path)."""
    cid = cid or new_id()
    config["process"]["args"] = args
    if nopidns:
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "pid"]
    b = bundle_factory(config)
    out = tmp_path / f"{rt.name}-{cid}.out"
    with open(out, "w") as o, open(tmp_path / f"{rt.name}-{cid}.err", "w") as e:
        rt("create", "--bundle", b, cid, check=True, stdout=o, stderr=e)
    if start:
        rt("start", cid, check=True)
    return cid, out


def cgroup_dir(pid: int, controller: str) -> str:
    """The v1 cgroup directory of pid for controller (or the cgroup2 one for "")."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller == "" and ctrls == "":
                return "/sys/fs/cgroup/unified" + path
            if controller and controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{ctrls}{path}"
    raise AssertionError(f"pid {pid} has no {controller or 'cgroup2'} cgroup")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def has_controller(name: str) -> bool:
    return os.path.isdir(f"/sys/fs/cgroup/{name}")


needs_v1 = pytest.mark.skipif(not (has_controller("memory") and has_controller("pids")
                                   and has_controller("cpu") and has_controller("freezer")),
                              reason="needs the v1 memory, pids, cpu and freezer controllers")


# --- pause / resume -------------------------------------------------------------------

COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; usleep 5000; done"]


@needs_v1
def test_pause_resume_freezes_the_container(runtime, bundle_factory, config, tmp_path):
    cid, out = start_container(runtime, bundle_factory, config, COUNTER, tmp_path)
    poll(lambda: out.stat().st_size > 0, "the counter to start")
    runtime("pause", cid, check=True)
    assert status(runtime, cid) == "paused"
    pid = runtime.state(cid)["pid"]
    assert read(cgroup_dir(pid, "freezer") + "/freezer.state") == "FROZEN"
    frozen_at = out.stat().st_size
    time.sleep(0.3)                               # a frozen counter never advances
    assert out.stat().st_size == frozen_at
    r = runtime("pause", cid)
    assert r.returncode == 1 and msg(r) == "container not running"
    runtime("resume", cid, check=True)
    assert status(runtime, cid) == "running"
    poll(lambda: out.stat().st_size > frozen_at, "the counter to advance after resume")
    r = runtime("resume", cid)
    assert r.returncode == 1 and msg(r) == "container not paused"


@needs_v1
def test_pause_a_created_container(runtime, bundle_factory, config, tmp_path):
    # runc pauses `created` containers too; resume brings back `created` and start works
    cid, out = start_container(runtime, bundle_factory, config, ["echo", "hi"], tmp_path,
                               start=False)
    runtime("pause", cid, check=True)
    assert status(runtime, cid) == "paused"            # a frozen created container: paused
    r = runtime("start", cid)
    assert r.returncode == 1
    r = runtime("pause", cid)
    assert r.returncode == 1 and msg(r) == "container not running"
    runtime("resume", cid, check=True)
    assert status(runtime, cid) == "created"
    runtime("start", cid, check=True)
    poll(lambda: status(runtime, cid) == "stopped", "the container to exit")
    assert out.read_text() == "hi\n"


def test_stopped_container_errors_match_runc(pyoci, runc, bundle_factory, config, tmp_path):
    msgs = {}
    for rt in (pyoci, runc):
        cid, _ = start_container(rt, bundle_factory, config, ["true"], tmp_path, cid="stopped1")
        poll(lambda rt=rt, cid=cid: status(rt, cid) == "stopped", "the container to exit")
        got = []
        for args in (["pause"], ["resume"], ["update", "--memory", "64m"], ["events"],
                     ["events", "--stats"], ["update", "--cpu-period", "x"],
                     ["events", "--interval", "0s"]):
            r = rt(*args, cid)
            assert r.returncode == 1, (rt.name, args)
            got.append(msg(r))
        r = rt("kill", "--all", cid, "KILL")
        assert r.returncode == 0, r.stderr                     # kill --all of stopped: 0
        r = rt("ps", "--format", "json", cid)
        assert r.returncode == 0 and r.stdout == "null\n"
        msgs[rt.name] = got
        rt("delete", cid, check=True)
    assert msgs["pyoci"] == msgs["runc"]
    assert msgs["pyoci"][:2] == ["container not running", "container not paused"]


def test_unknown_container_and_usage(pyoci):
    for args in (["pause", "nosuch"], ["resume", "nosuch"], ["update", "nosuch"],
                 ["events", "nosuch"], ["ps", "nosuch"]):
        r = pyoci(*args)
        assert r.returncode == 1 and "container does not exist" in r.stderr
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    for args in (["pause"], ["update", "a", "b"], ["events"], ["ps"]):
        r = pyoci(*args)
        assert r.returncode == 1 and "argument(s)" in r.stderr


# --- update ---------------------------------------------------------------------------

def _limits(pid: int) -> dict:
    mem = cgroup_dir(pid, "memory")
    cpu = cgroup_dir(pid, "cpu")
    return {
        "memory": read(f"{mem}/memory.limit_in_bytes"),
        "reservation": read(f"{mem}/memory.soft_limit_in_bytes"),
        "pids": read(cgroup_dir(pid, "pids") + "/pids.max"),
        "quota": read(f"{cpu}/cpu.cfs_quota_us"),
        "period": read(f"{cpu}/cpu.cfs_period_us"),
        "shares": read(f"{cpu}/cpu.shares"),
        "cpus": read(cgroup_dir(pid, "cpuset") + "/cpuset.cpus"),
    }


@needs_v1
def test_update_flags_write_the_cgroup_like_runc(pyoci, runc, bundle_factory, config, tmp_path):
    got = {}
    for rt in (pyoci, runc):
        cid, _ = start_container(rt, bundle_factory, config, ["sleep", "1000"], tmp_path)
        pid = rt.state(cid)["pid"]
        rt("update", "--memory", "100m", "--memory-reservation", "50M", "--pids-limit", "20",
           "--cpu-quota", "50000", "--cpu-period", "200000", "--cpu-share", "512",
           "--cpuset-cpus", "0", cid, check=True)
        first = _limits(pid)
        # zeros and absent flags leave values alone; a new value replaces only its own
        rt("update", "--memory", "1.5GiB", "--pids-limit", "0", cid, check=True)
        second = _limits(pid)
        rt("update", "--cpu-quota", "-1", "--memory", "-1", "--pids-limit", "-1", cid,
           check=True)
        third = _limits(pid)
        got[rt.name] = (first, second, third)
    first, second, third = got["pyoci"]
    assert first == {"memory": str(100 * MiB), "reservation": str(50 * MiB), "pids": "20",
                     "quota": "50000", "period": "200000", "shares": "512", "cpus": "0"}
    assert second == {**first, "memory": str(1536 * MiB)}
    assert third["quota"] == "-1" and third["pids"] == "max"
    assert int(third["memory"]) > 1 << 60
    assert got["pyoci"] == got["runc"]


@needs_v1
def test_update_keeps_merged_resources(pyoci, bundle_factory, config, tmp_path):
    config["linux"]["resources"]["pids"] = {"limit": 50}
    cid, _ = start_container(pyoci, bundle_factory, config, ["sleep", "1000"], tmp_path)
    pid = pyoci.state(cid)["pid"]
    pyoci("update", "--memory", "64m", cid, check=True)
    pyoci("update", "--cpu-quota", "30000", cid, check=True)
    stored = json.loads(read(os.path.join(pyoci.root, cid, "resources.json")))
    assert stored["pids"] == {"limit": 50}
    assert stored["memory"]["limit"] == 64 * MiB and stored["cpu"]["quota"] == 30000
    assert stored["devices"] == config["linux"]["resources"]["devices"]
    assert _limits(pid)["pids"] == "50" and _limits(pid)["memory"] == str(64 * MiB)


@needs_v1
def test_update_from_stdin_and_file(runtime, bundle_factory, config, tmp_path):
    cid, _ = start_container(runtime, bundle_factory, config, ["sleep", "1000"], tmp_path)
    pid = runtime.state(cid)["pid"]
    doc = tmp_path / "res.json"
    doc.write_text(json.dumps({"memory": {"limit": 200 * MiB}, "pids": {"limit": 33},
                               "cpu": {"shares": 256}}))
    with open(doc) as stdin:
        runtime("update", "--resources", "-", cid, check=True, stdin=stdin)
    lim = _limits(pid)
    assert (lim["memory"], lim["pids"], lim["shares"]) == (str(200 * MiB), "33", "256")
    doc.write_text(json.dumps({"pids": {"limit": 44}}))
    runtime("update", f"--resources={doc}", "--pids-limit", "99", cid, check=True)
    lim = _limits(pid)             # the other flags are ignored with --resources
    assert (lim["memory"], lim["pids"]) == (str(200 * MiB), "44")


@needs_v1
def test_update_errors_match_runc(pyoci, runc, bundle_factory, config, tmp_path):
    cases = [
        ["--memory", "abc"], ["--memory", "-5"], ["--memory", "1.2.3"],
        ["--cpu-period", "abc"], ["--cpu-quota", "1.5"], ["--cpu-share", "-1"],
        ["--pids-limit", "abc"], ["--blkio-weight", "x"], ["--l3-cache-schema", "L3:0=f"],
        ["--mem-bw-schema", "MB:0=50"],
    ]
    got = {}
    for rt in (pyoci, runc):
        cid, _ = start_container(rt, bundle_factory, config, ["sleep", "1000"], tmp_path,
                                 cid="upderr")
        pid = rt.state(cid)["pid"]
        before = _limits(pid)
        msgs = []
        for args in cases:
            r = rt("update", *args, cid)
            assert r.returncode == 1, (rt.name, args)
            msgs.append(msg(r))
        assert _limits(pid) == before
        got[rt.name] = msgs
        rt("delete", "--force", cid, check=True)
    assert got["pyoci"] == got["runc"]


@needs_v1
def test_update_bad_json_names_the_field(pyoci, bundle_factory, config, tmp_path):
    cid, _ = start_container(pyoci, bundle_factory, config, ["sleep", "1000"], tmp_path)
    doc = tmp_path / "bad.json"
    for body, field in (('{"memory": {"limit": "x"}}', "memory.limit"),
                        ('{"cpu": {"cpus": 3}}', "cpu.cpus"),
                        ('{"pids": []}', "pids"),
                        ('{"memory": {"limit": 100, "swap": 50}}', "memory.swap")):
        doc.write_text(body)
        r = pyoci("update", "-r", str(doc), cid)
        assert r.returncode == 1 and field in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    assert not os.path.exists(os.path.join(pyoci.root, cid, "resources.json"))
    doc.write_text("not json")
    assert pyoci("update", "-r", str(doc), cid).returncode == 1


# --- events ---------------------------------------------------------------------------

def _shape(d, depth=2):
    """Keys of nested dicts down to depth (values that are not dicts become their type)."""
    if not isinstance(d, dict) or depth == 0:
        return type(d).__name__
    return {k: _shape(v, depth - 1) for k, v in d.items()}


@needs_v1
def test_events_stats_shape_matches_runc(pyoci, runc, bundle_factory, config, tmp_path):
    config["linux"]["resources"]["pids"] = {"limit": 40}
    events = {}
    for rt in (pyoci, runc):
        cid, _ = start_container(rt, bundle_factory, config, ["sleep", "1000"], tmp_path,
                                 cid="stats1")
        r = rt("events", "--stats", cid, check=True)
        lines = r.stdout.splitlines()
        assert len(lines) == 1 and " " not in lines[0]      # one compact JSON line
        events[rt.name] = json.loads(lines[0])
        rt("delete", "--force", cid, check=True)
    p, c = events["pyoci"], events["runc"]
    assert p["type"] == "stats" and p["id"] == "stats1"
    assert list(p) == list(c) == ["type", "id", "data"]
    assert list(p["data"]) == list(c["data"])
    assert p["data"]["pids"] == c["data"]["pids"] == {"current": 1, "limit": 40}
    for section in ("cpu", "memory"):
        # pyoci may report more (cache, hugetlb sizes) but never a different layout
        ps, cs = _shape(p["data"][section]), _shape(c["data"][section])
        assert set(cs) <= set(ps), section
        for k in cs:
            if isinstance(cs[k], dict):
                assert set(cs[k]) <= set(ps[k]), (section, k)
    assert p["data"]["memory"]["usage"]["usage"] > 0
    assert p["data"]["cpu"]["usage"]["total"] > 0


@needs_v1
def test_events_stream_until_the_container_stops(pyoci, bundle_factory, config, tmp_path):
    cid, _ = start_container(pyoci, bundle_factory, config, ["sleep", "1000"], tmp_path)
    out = tmp_path / "events.out"
    with open(out, "w") as o, open(tmp_path / "events.err", "w") as e:
        p = subprocess.Popen(pyoci.argv("events", "--interval", "50ms", cid), stdout=o,
                             stderr=e, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: len(out.read_text().splitlines()) >= 2, "two stats events")
        pyoci("kill", cid, "KILL", check=True)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(e["type"] == "stats" and e["id"] == cid for e in lines)
    assert all(e["data"]["pids"]["current"] >= 0 for e in lines)


@needs_v1
def test_events_reports_oom(pyoci, bundle_factory, config, tmp_path):
    mem = "/sys/fs/cgroup/memory"
    config["linux"]["resources"]["memory"] = {"limit": 32 * MiB}
    if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
        config["linux"]["resources"]["memory"]["swap"] = 32 * MiB
    cid, _ = start_container(pyoci, bundle_factory, config,
                             ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
                             tmp_path, start=False)
    out = tmp_path / "events.out"
    with open(out, "w") as o, open(tmp_path / "events.err", "w") as e:
        p = subprocess.Popen(pyoci.argv("events", "--interval", "100ms", cid), stdout=o,
                             stderr=e, stdin=subprocess.DEVNULL)
    try:
        # a first stats event shows events has read the starting OOM count
        poll(lambda: out.read_text().strip(), "a first stats event")
        pyoci("start", cid, check=True)
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e for e in lines if e["type"] == "oom"] == [{"type": "oom", "id": cid}]


def test_events_bad_interval_matches_runc(pyoci, runc):
    for bad in ("xx", "5", "1x"):
        rp, rr = pyoci("events", "--interval", bad, "x"), runc("events", "--interval", bad, "x")
        assert rp.returncode == rr.returncode == 1
        assert msg(rp) == msg(rr)


def test_duration_parser():
    from pyoci.units import parse_duration, ram_in_bytes

    assert parse_duration("5s") == 5 and parse_duration("1m30s") == 90
    assert parse_duration("250ms") == 0.25 and parse_duration("1.5h") == 5400
    assert parse_duration("0") == 0 and parse_duration("-1s") == -1
    for bad in ("", "5", "s", "1x", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert ram_in_bytes("512m") == 512 * MiB and ram_in_bytes("1.5 GiB") == 1536 * MiB
    assert ram_in_bytes("100kb") == 102400 and ram_in_bytes("7") == 7
    assert ram_in_bytes("2p") == 2 << 50
    for bad in ("abc", "-5", "1e3", "0x10", "5 mb extra"):
        with pytest.raises(ValueError):
            ram_in_bytes(bad)


# --- ps -------------------------------------------------------------------------------

FORKER = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]


def _container_pids(init: int) -> set[int]:
    """The init and its children, from /proc."""
    kids = read(f"/proc/{init}/task/{init}/children").split()
    return {init, *map(int, kids)}


@needs_v1
def test_ps_json_and_table(runtime, bundle_factory, config, tmp_path):
    cid, _ = start_container(runtime, bundle_factory, config, FORKER, tmp_path)
    init = runtime.state(cid)["pid"]
    want = poll(lambda: (len(_container_pids(init)) == 3) and _container_pids(init),
                "the two sleeps")
    r = runtime("ps", "--format", "json", cid, check=True)
    assert set(json.loads(r.stdout)) == want
    assert r.stdout == runtime("ps", "-f", "json", cid, check=True).stdout
    table = runtime("ps", cid, check=True).stdout.splitlines()
    header = subprocess.run(["ps", "-ef"], capture_output=True, text=True).stdout
    assert table[0] == header.splitlines()[0]
    pid_col = table[0].split().index("PID")
    assert {int(ln.split()[pid_col]) for ln in table[1:]} == want
    table = runtime("ps", cid, "-o", "pid,comm", check=True).stdout.splitlines()
    assert table[0].split() == ["PID", "COMMAND"]
    assert sorted(ln.split()[1] for ln in table[1:]) == ["sh", "sleep", "sleep"]
    r = runtime("ps", cid, "-o", "comm")
    assert r.returncode == 1 and msg(r) == "couldn't find PID field in ps output"
    r = runtime("ps", "--format", "xml", cid)
    assert r.returncode == 1 and msg(r) == "invalid format option"


# --- kill --all -----------------------------------------------------------------------

@needs_v1
def test_kill_all_kills_every_process(runtime, bundle_factory, config, tmp_path):
    # no pid namespace: killing the init alone would leave the sleeps running
    cid, _ = start_container(runtime, bundle_factory, config, FORKER, tmp_path, nopidns=True)
    init = runtime.state(cid)["pid"]
    pids = poll(lambda: (len(_container_pids(init)) == 3) and _container_pids(init),
                "the two sleeps")
    runtime("kill", "--all", cid, "KILL", check=True)
    poll(lambda: not any(alive(p) for p in pids), "every process to die")
    poll(lambda: status(runtime, cid) == "stopped", "the container to stop")


@needs_v1
def test_kill_all_of_a_paused_container(runtime, bundle_factory, config, tmp_path):
    cid, _ = start_container(runtime, bundle_factory, config, FORKER, tmp_path, nopidns=True)
    init = runtime.state(cid)["pid"]
    pids = poll(lambda: (len(_container_pids(init)) == 3) and _container_pids(init),
                "the two sleeps")
    runtime("pause", cid, check=True)
    runtime("kill", "--all", cid, "KILL", check=True)
    poll(lambda: not any(alive(p) for p in pids), "every process to die")


# --- features -------------------------------------------------------------------------

def test_features_cgroup_facts(pyoci):
    mounts = [ln.split(" - ")[1].split()[0] for ln in open("/proc/self/mountinfo")]
    v2_root = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") \
        else "/sys/fs/cgroup/unified"
    v2_ctrls = (read(f"{v2_root}/cgroup.controllers").split()
                if os.path.exists(f"{v2_root}/cgroup.controllers") else [])
    pure_v2 = v2_root == "/sys/fs/cgroup"
    want = {
        "v1": "cgroup" in mounts and not pure_v2,
        "v2": "cgroup2" in mounts,
        "systemd": os.path.isdir("/run/systemd/system"),
        "rdma": os.path.isdir("/sys/fs/cgroup/rdma") or (pure_v2 and "rdma" in v2_ctrls),
    }
    got = json.loads(pyoci("features", check=True).stdout)["linux"]["cgroup"]
    assert {k: got[k] for k in want} == want
