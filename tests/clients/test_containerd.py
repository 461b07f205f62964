"""containerd 1.6 with the io.containerd.runc.v2 shim running runc or pyoci: `ctr run
--runc-binary` and the CRI plugin (one runtime handler per binary, BinaryName in config.toml).
The shim calls the runtime with --root DIR/<namespace> --log <bundle>/log.json
--log-format json on every command."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from clientlib import (REPO, RUNTIMES, cgroup_file, needs, ok, read, sh,
                       unique)

import daemons

pytestmark = needs("containerd", "ctr", "containerd-shim-runc-v2", package="containerd")

IMG = daemons.BUSYBOX_IMAGE
CRI = os.path.join(REPO, "scripts", "clients", "cri.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def ctr(d, *args: str, **kw):
    return sh(daemons.ctr(d, *args), **kw)


def ctr_ok(d, *args: str, **kw) -> str:
    return ok(daemons.ctr(d, *args), **kw)


@pytest.fixture
def cid(containerd):
    c = unique("ctr")
    yield c
    ctr(containerd, "task", "kill", "--all", "--signal", "SIGKILL", c)
    wait_stopped(containerd, c)
    ctr(containerd, "task", "delete", "--force", c)
    ctr(containerd, "container", "delete", c)


def task_status(d, c: str) -> str:
    for line in ctr_ok(d, "task", "ls").splitlines()[1:]:
        f = line.split()
        if f[0] == c:
            return f[2]
    return ""


def wait_stopped(d, c: str) -> None:
    for _ in range(600):
        if task_status(d, c) in ("STOPPED", ""):
            return
        time.sleep(0.05)


def test_ctr_run_exit_code_and_output(containerd, rt, cid):
    r = ctr(containerd, "run", "--rm", "--runc-binary", RUNTIMES[rt], IMG, cid,
            "sh", "-c", "echo hi; exit 3")
    assert (r.returncode, r.stdout) == (3, "hi\n"), r.stderr


def test_ctr_detached_ps_pause_kill(containerd, rt, cid):
    ctr_ok(containerd, "run", "-d", "--runc-binary", RUNTIMES[rt], IMG, cid, "sleep", "1000")
    assert task_status(containerd, cid) == "RUNNING"
    pids = ctr_ok(containerd, "task", "ps", cid).splitlines()
    assert pids[0].split() == ["PID", "INFO"] and len(pids) == 2
    pid = int(pids[1].split()[0])
    ctr_ok(containerd, "task", "pause", cid)
    assert task_status(containerd, cid) == "PAUSED"
    assert read(cgroup_file(pid, "freezer", "freezer.state")) == "FROZEN"
    ctr_ok(containerd, "task", "resume", cid)
    assert task_status(containerd, cid) == "RUNNING"
    ctr_ok(containerd, "task", "kill", "--signal", "SIGKILL", cid)
    wait_stopped(containerd, cid)
    assert task_status(containerd, cid) == "STOPPED"
    r = ctr(containerd, "task", "delete", cid)
    assert r.returncode == 0 and "exit code 137" in r.stderr
    # kill --all and delete of what is already gone: the shim must still succeed
    ctr_ok(containerd, "container", "delete", cid)


def test_ctr_kill_all(containerd, rt, cid):
    ctr_ok(containerd, "run", "-d", "--runc-binary", RUNTIMES[rt], IMG, cid,
           "sh", "-c", "sleep 1000 & sleep 1000 & wait")
    ctr_ok(containerd, "task", "kill", "--all", "--signal", "SIGKILL", cid)
    wait_stopped(containerd, cid)
    assert task_status(containerd, cid) == "STOPPED"
    # again, on a stopped task: `kill --all` of a stopped container exits 0
    ctr_ok(containerd, "task", "kill", "--all", "--signal", "SIGKILL", cid)


def test_ctr_exec(containerd, rt, cid):
    ctr_ok(containerd, "run", "-d", "--runc-binary", RUNTIMES[rt], IMG, cid, "sleep", "1000")
    r = ctr(containerd, "task", "exec", "--exec-id", "e1", "--user", "1000", "--cwd", "/tmp",
            cid, "sh", "-c", "id -u; pwd; exit 4")
    assert (r.returncode, r.stdout.split()) == (4, ["1000", "/tmp"]), r.stderr


def test_shim_calls_all_succeed(containerd, rt, cid, tmp_path):
    """Every runtime call the shim makes for a run/kill/delete cycle exits 0, with the
    flags the shim always passes."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "runtime"
    wrapper.write_text(f'#!/bin/sh\n"{RUNTIMES[rt]}" "$@"\nrc=$?\n'
                       f'echo "$rc $*" >> "{calls}"\nexit $rc\n')
    wrapper.chmod(0o755)
    ctr_ok(containerd, "run", "-d", "--runc-binary", str(wrapper), IMG, cid, "sleep", "1000")
    ctr_ok(containerd, "task", "kill", "--signal", "SIGKILL", cid)
    wait_stopped(containerd, cid)
    ctr_ok(containerd, "task", "delete", cid)
    lines = calls.read_text().splitlines()
    commands = [line.split()[1:] for line in lines]
    assert all(line.startswith("0 ") for line in lines), lines
    for argv in commands:
        assert argv[0] == "--root" and argv[1].endswith("/default"), argv
        assert argv[2] == "--log" and argv[3].endswith("/log.json"), argv
        assert argv[4:6] == ["--log-format", "json"], argv
    verbs = [argv[6] for argv in commands]
    assert verbs[:2] == ["create", "start"] and "delete" in verbs


# --- CRI ----------------------------------------------------------------------------------

def cri(d, call: str, **args) -> dict:
    r = sh([SYSTEM_PYTHON, CRI, d.address, call, json.dumps(args)])
    assert r.returncode == 0, f"cri {call}: {r.stderr}"
    return json.loads(r.stdout)


@pytest.fixture
def pod(containerd, rt, tmp_path):
    if subprocess.run([SYSTEM_PYTHON, "-c", "import grpc"], capture_output=True).returncode:
        pytest.skip("the CRI client needs python3-grpcio")
    sandbox = {"name": unique("pod"), "log_directory": str(tmp_path / "logs")}
    pid = cri(containerd, "runp", sandbox=sandbox, runtime_handler=rt)["id"]
    yield {"id": pid, "sandbox": sandbox, "logs": tmp_path / "logs"}
    sh([SYSTEM_PYTHON, CRI, containerd.address, "stopp", json.dumps({"id": pid})])
    sh([SYSTEM_PYTHON, CRI, containerd.address, "rmp", json.dumps({"id": pid})])


def cri_container(d, pod: dict, name: str, *command: str) -> str:
    c = cri(d, "create", pod=pod["id"], sandbox=pod["sandbox"],
            container={"name": name, "image": IMG, "command": list(command)})["id"]
    cri(d, "start", id=c)
    return c


def wait_exited(d, c: str) -> dict:
    for _ in range(600):
        st = cri(d, "status", id=c)
        if st["state"] == "EXITED":
            return st
        time.sleep(0.05)
    raise AssertionError(f"{c} never exited")


def test_cri_pod_and_container(containerd, pod):
    c = cri_container(containerd, pod, "c1", "sh", "-c", "echo out; echo err >&2; exit 3")
    st = wait_exited(containerd, c)
    assert st["exit_code"] == 3
    log = (pod["logs"] / "c1.log").read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in log) == ["stderr F err", "stdout F out"]
    cri(containerd, "rm", id=c)


def test_cri_stop(containerd, pod):
    c = cri_container(containerd, pod, "c2", "sh", "-c", 'trap "exit 7" TERM; '
                      "while :; do sleep 0.1; done")
    assert cri(containerd, "status", id=c)["state"] == "RUNNING"
    cri(containerd, "stop", id=c, timeout=30)
    assert cri(containerd, "status", id=c) == {"state": "EXITED", "exit_code": 7,
                                               "reason": "Error"}
    cri(containerd, "rm", id=c)


def test_cri_update(containerd, pod):
    """UpdateContainerResources: the shim calls `update --resources -` (JSON on stdin)."""
    c = cri_container(containerd, pod, "c4", "sleep", "1000")
    cri(containerd, "update", id=c, memory=64 << 20, cpu_shares=512)
    pid = next(int(line.split()[1]) for line in
               ok(daemons.ctr(containerd, "task", "ls", namespace="k8s.io")).splitlines()[1:]
               if line.split()[0] == c)
    assert read(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == str(64 << 20)
    assert read(cgroup_file(pid, "cpu", "cpu.shares")) == "512"
    cri(containerd, "stop", id=c, timeout=0)
    cri(containerd, "rm", id=c)


def test_cri_exec_sync(containerd, pod, rt):
    c = cri_container(containerd, pod, "c3", "sleep", "1000")
    r = cri(containerd, "exec", id=c, cmd=["sh", "-c", "echo e; exit 5"], timeout=60)
    assert (r["stdout"], r["exit_code"]) == ("e\n", 5)
    cri(containerd, "stop", id=c, timeout=0)
    cri(containerd, "rm", id=c)
