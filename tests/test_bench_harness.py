"""bench/run: runs against runc in --quick mode, writes valid JSON and Markdown, cleans up
after itself (also when interrupted). No timing assertions."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from support.harness import REPO, needs_root, reap_zombies

BENCH = os.path.join(REPO, "bench")
RUN = os.path.join(BENCH, "run")
sys.path.insert(0, BENCH)

import harness  # noqa: E402
import report  # noqa: E402

needs_runc = pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"),
                                   reason="busybox-static is not installed")


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


@pytest.fixture
def spawned():
    """Popen objects started by a test; killed (by PID) and reaped if still running."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    reap_zombies()


# --- pure parts ---------------------------------------------------------------------------

def test_median_and_nearest_rank_percentiles():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert harness.median(xs) == 3.0
    assert harness.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert harness.percentile(xs, 90) == 5.0
    assert harness.percentile(list(map(float, range(1, 101))), 99) == 99.0
    s = harness.summarize(xs)
    assert (s["n"], s["min"], s["max"], s["mean"]) == (5, 1.0, 5.0, 3.0)


def _m(**medians):
    return {"per_runtime": {n: {"median": v} for n, v in medians.items()}}


def test_targets_ratio_and_floor():
    metrics = {"run": _m(pyoci=9.0, runc=10.0), "create": _m(pyoci=11.0, runc=10.0),
               "shim": _m(pyoci=12.5, runc=10.0), "state": _m(pyoci=9.0, runc=3.0),
               "kill": _m(pyoci=10.0, runc=3.0), "floor": _m(floor=8.0),
               "init_hwm": _m(runc=100.0)}
    assert report.judge("run", metrics)[1] == "met"
    assert report.judge("create", metrics)[1] == "not met"
    assert report.judge("shim", metrics)[1] == "met"
    assert report.judge("state", metrics)[1] == "met"
    assert report.judge("kill", metrics)[1] == "not met"
    assert report.judge("init_hwm", metrics)[1] == "n/a"
    assert report.judge("cycle", metrics) == ("", "")
    assert report.ratios(metrics["run"], ["pyoci", "runc"]) == {"pyoci/runc": 0.9}


def test_probe_note_names_hybrid_cgroups_for_crun():
    note = harness.probe_note("crun", "cgroups in hybrid mode not supported, drop all ...")
    assert "hybrid cgroups" in note and "lane/run" in note
    assert harness.probe_note("pyoci", "boom") == "probe failed: boom"


# --- the harness against runc -------------------------------------------------------------

@needs_root
@needs_runc
@needs_busybox
def test_quick_run_against_runc_writes_json_and_markdown(tmp_path):
    work, out, md = tmp_path / "work", tmp_path / "out", tmp_path / "RESULTS.md"
    work.mkdir()
    r = subprocess.run([sys.executable, RUN, "--runtime", "runc", "--quick", "--iterations",
                        "3", "--out", str(out), "--md", str(md), "--tmpdir", str(work)],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    reap_zombies()
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text(), parse_constant=_reject_constant)

    assert res["runtimes"]["runc"]["available"] is True
    assert res["runtimes"]["runc"]["version"].startswith("runc")
    assert res["machine"]["nproc"] >= 1 and res["machine"]["kernel"]
    assert res["config"]["quick"] is True and res["config"]["iterations"] == 3
    assert os.path.isabs(res["floor_interpreter"]["path"])
    ms = res["metrics"]
    for key in ("run", "create", "start", "state", "kill", "delete", "cycle", "shim",
                "exec"):
        v = ms[key]["per_runtime"]["runc"]
        assert "error" not in v, (key, v)
        assert v["n"] == 3 and len(v["samples"]) == 3 and v["median"] > 0
        assert v["min"] <= v["median"] <= v["p90"] <= v["p99"] <= v["max"]
    assert ms["floor"]["per_runtime"]["floor"]["n"] >= 3
    assert ms["sequence"]["per_runtime"]["runc"]["n"] == res["config"]["sequence_reps"]
    lat = ms["parallel_p99"]["per_runtime"]["runc"]
    assert lat["n"] == res["config"]["parallel_n"] * res["config"]["parallel_rounds"]
    assert ms["parallel_throughput"]["per_runtime"]["runc"]["median"] > 0
    assert ms["init_hwm"]["per_runtime"]["runc"]["median"] > 0
    for key in ("cmd_rss_run", "cmd_rss_create", "cmd_rss_state"):
        v = ms[key]["per_runtime"]["runc"]
        if os.access(harness.GNU_TIME, os.X_OK):
            assert v["median"] > 0 and v["n"] == 3, (key, v)
        else:
            assert "na" in v
    # pyoci was not asked for: its targets cannot be judged
    assert ms["run"]["status"] == "n/a" and ms["state"]["status"] == "n/a"

    text = md.read_text()
    assert "| metric | unit | runc |" in text
    for key in report.ORDER:
        assert f"| {ms[key]['title']} |" in text, key
    assert res["runtimes"]["runc"]["version"] in text
    assert "nproc" in text and res["date"] in text
    # every container, state root and bundle is gone
    assert os.listdir(work) == []


@needs_root
@needs_runc
@needs_busybox
def test_interrupt_removes_containers_and_work_dir(tmp_path, spawned):
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.Popen([sys.executable, RUN, "--runtime", "runc", "--only", "exec",
                          "--iterations", "100000", "--out", str(tmp_path / "out"),
                          "--md", str(tmp_path / "R.md"), "--tmpdir", str(work)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    spawned.append(p)
    # exec keeps one running container for the whole metric: wait for its pid file
    deadline = time.monotonic() + 120
    pid_files: list[str] = []
    while not pid_files and p.poll() is None and time.monotonic() < deadline:
        pid_files = glob.glob(str(work / "pyoci-bench-*" / "*.pid"))
        time.sleep(0.05)
    assert pid_files, "the harness never created a container"
    time.sleep(0.2)
    with open(pid_files[0]) as f:
        init = int(f.read().strip())
    assert harness.proc_state(init) not in (None, "Z")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    reap_zombies()
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert harness.proc_state(init) in (None, "Z"), "container init left running"
    assert not os.path.exists(str(tmp_path / "out" / "results.json"))
    assert os.listdir(work) == []


@needs_root
def test_leftover_cgroups_named_after_our_ids_are_found_and_removed():
    with open("/proc/self/cgroup") as f:
        own = {line.split(":")[1]: line.split(":", 2)[2].strip() for line in f}
    mount = "/sys/fs/cgroup/pids"
    if mount not in harness.cgroup_mounts() or "pids" not in own:
        pytest.skip("no cgroup v1 pids hierarchy")
    parent = os.path.join(mount, own["pids"].lstrip("/"))
    path = os.path.join(parent, harness.id_prefix() + "pyoci-1")
    other = os.path.join(parent, "notbench-1")
    os.mkdir(path)
    os.mkdir(other)
    try:
        assert harness.leftover_cgroups(harness.id_prefix()) == [path]
        harness.remove_cgroups([path])
        assert not os.path.exists(path)
        assert harness.leftover_cgroups(harness.id_prefix()) == []
    finally:
        for p in (path, other):
            if os.path.exists(p):
                os.rmdir(p)


def test_profile_timeline_markers_from_strace_output():
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("bench_profile", os.path.join(BENCH, "profile"))
    spec = importlib.util.spec_from_loader("bench_profile", loader)
    prof = importlib.util.module_from_spec(spec)
    loader.exec_module(prof)
    text = "\n".join([
        '100 10.000000 execve("/usr/bin/rt", ["rt", "run"], 0x1 /* 3 vars */) = 0',
        "101 10.050000 unshare(CLONE_NEWNS|CLONE_NEWPID) = 0",
        '102 10.060000 pivot_root(".", ".") = 0',
        '102 10.070000 execve("/bin/true", ["true"], 0x2 /* 3 vars */ <unfinished ...>',
        "102 10.071000 +++ exited with 0 +++",
        "100 10.080000 +++ exited with 0 +++"])
    marks = prof.timeline(text, "/bin/true")
    assert marks == {"start": 10.0, "unshare": 10.05, "pivot": 10.06, "exec": 10.07,
                     "end": 10.08}
    assert "exec" not in prof.timeline(text, "/bin/sh")
