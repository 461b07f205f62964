"""containerd-shim-pyoci-v2: containerd runs pyoci as its own shim runtime,
io.containerd.pyoci.v2 (`ctr run --runtime`, a CRI handler with that runtime_type). This
containerd's PATH (and so its shims') holds containerd, the shim and pyoci, and neither runc
nor containerd-shim-runc-v2: nothing here can reach them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from clientlib import PYOCI, REPO, cgroup_file, needs, ok, read, reap_zombies, sh, unique

import daemons
from test_containerd import cri, wait_exited

pytestmark = needs("containerd", "ctr", package="containerd")

IMG = daemons.BUSYBOX_IMAGE
RUNTIME = "io.containerd.pyoci.v2"
HANDLER = "pyoci-shim"
SHIM = os.path.join(os.path.dirname(PYOCI), "containerd-shim-pyoci-v2")
if not os.path.exists(SHIM):
    SHIM = shutil.which("containerd-shim-pyoci-v2") or SHIM


@pytest.fixture(scope="module")
def shimd(image_archive, tmp_path_factory):
    bindir = tmp_path_factory.mktemp("shim-path")
    for name, target in (("containerd", shutil.which("containerd")),
                         ("containerd-shim-pyoci-v2", SHIM), ("pyoci", PYOCI)):
        os.symlink(target, bindir / name)
    env = dict(os.environ, PATH=str(bindir))
    for absent in ("runc", "containerd-shim-runc-v2"):
        assert shutil.which(absent, path=env["PATH"]) is None
    # the CRI plugin wants its default "runc" handler configured: its shim is not on PATH
    d = daemons.start_containerd({"runc": daemons.RUNC}, {HANDLER: RUNTIME}, env=env)
    try:
        for ns in ("default", "k8s.io"):
            ok(daemons.ctr(d, "image", "import", image_archive, namespace=ns))
        yield d
    finally:
        daemons.stop(d)
        reap_zombies()


def ctr(d, *args: str, **kw):
    return sh(daemons.ctr(d, *args), **kw)


def ctr_ok(d, *args: str, **kw) -> str:
    return ok(daemons.ctr(d, *args), **kw)


def task_status(d, c: str) -> tuple[str, int]:
    for line in ctr_ok(d, "task", "ls").splitlines()[1:]:
        f = line.split()
        if f[0] == c:
            return f[2], int(f[1])
    return "", 0


def wait_stopped(d, c: str) -> None:
    for _ in range(600):
        if task_status(d, c)[0] in ("STOPPED", ""):
            return
        time.sleep(0.05)


@pytest.fixture
def cid(shimd):
    c = unique("shim")
    yield c
    ctr(shimd, "task", "kill", "--all", "--signal", "SIGKILL", c)
    wait_stopped(shimd, c)
    ctr(shimd, "task", "delete", "--force", c)
    ctr(shimd, "container", "delete", c)


def in_pty(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run argv with a terminal (33 rows, 111 columns) as its stdio (ctr -t wants one):
    exit code, output."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    code = p.wait(max(1.0, deadline - time.monotonic()))
    reap_zombies()
    return code, out.decode(errors="replace")


# --- ctr --------------------------------------------------------------------------------

def test_run_exit_code_and_output(shimd, cid):
    r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, IMG, cid,
            "sh", "-c", "echo hi; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "hi\n", "err\n")


def test_run_stdin(shimd, cid):
    # a line, not the end of the input: `ctr run` never closes the task's stdin (CloseIO),
    # with the runc shim neither
    r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, IMG, cid, "sh", "-c",
            "read x; echo got $x; exit 2", stdin="from stdin\n")
    assert (r.returncode, r.stdout) == (2, "got from stdin\n"), r.stderr


def test_run_log_uri_file(shimd, cid, tmp_path):
    log = tmp_path / "logs" / "out.log"
    r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, "--log-uri", f"file://{log}", IMG, cid,
            "sh", "-c", "echo to-file; echo err-to-file >&2; exit 6")
    assert (r.returncode, r.stdout) == (6, ""), r.stderr
    assert sorted(log.read_text().splitlines()) == ["err-to-file", "to-file"]


def test_run_log_uri_binary(shimd, cid, tmp_path):
    """binary://: a logger started with the output as fds 3 and 4, fd 5 closed when ready,
    CONTAINER_ID and CONTAINER_NAMESPACE in its environment, the URI's query as arguments.
    (It runs with containerd's PATH, which has no cat: /bin/cat by its path.)"""
    logger = tmp_path / "logger"
    out = tmp_path / "logged"
    logger.write_text(f"""#!/bin/sh
echo "$CONTAINER_NAMESPACE $CONTAINER_ID $*" > "{out}.meta"
exec 5>&-
/bin/cat <&3 > "{out}.stdout" &
/bin/cat <&4 > "{out}.stderr"
wait
""")
    logger.chmod(0o755)
    r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, "--log-uri",
            f"binary://{logger}?flag=value", IMG, cid,
            "sh", "-c", "echo one; echo two >&2; exit 0")
    assert r.returncode == 0, r.stderr
    for _ in range(200):
        if all(os.path.exists(f"{out}.{k}") and open(f"{out}.{k}").read()
               for k in ("stdout", "stderr")):
            break
        time.sleep(0.05)
    assert open(f"{out}.meta").read() == f"default {cid} flag value\n"
    assert open(f"{out}.stdout").read() == "one\n"
    assert open(f"{out}.stderr").read() == "two\n"


# the size arrives with ResizePty just after the start: wait for it (at most 30 s), print
# it (stty may also fail while the resize's SIGWINCH lands: busybox's sh then loses its child)
WAIT_SIZE = ('i=0; while [ $i -lt 300 ]; do s=$(stty size 2>/dev/null); case "$s" in '
             '""|"0 0") sleep 0.1; i=$((i+1));; *) break;; esac; done; echo "size $s"')


def test_run_tty(shimd, cid):
    """A terminal, sized like ctr's own through ResizePty."""
    code, out = in_pty(daemons.ctr(shimd, "run", "--rm", "-t", "--runtime", RUNTIME, IMG, cid,
                                   "sh", "-c", "tty; " + WAIT_SIZE + "; exit 5"))
    assert code == 5 and "/dev/pts/" in out and "size 33 111" in out, out


def test_run_error_is_reported(shimd, cid):
    r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, IMG, cid, "/no/such/program")
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    # once, as the call's error (not also as the container's output: pyoci's own stderr)
    assert [line for line in lines if "/no/such/program" in line] == \
        [line for line in lines if line.startswith("ctr: failed to create shim task: pyoci ")], \
        r.stderr
    assert len(lines) == 1, r.stderr


def test_detached_ps_pause_resume_kill_delete(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    status, pid = task_status(shimd, cid)
    assert status == "RUNNING"
    pids = ctr_ok(shimd, "task", "ps", cid).splitlines()
    assert pids[0].split() == ["PID", "INFO"] and [int(line.split()[0]) for line in pids[1:]] \
        == [pid]
    ctr_ok(shimd, "task", "pause", cid)
    assert task_status(shimd, cid)[0] == "PAUSED"
    assert read(cgroup_file(pid, "freezer", "freezer.state")) == "FROZEN"
    ctr_ok(shimd, "task", "resume", cid)
    assert task_status(shimd, cid)[0] == "RUNNING"
    r = ctr(shimd, "task", "delete", cid)        # a running task is not deleted
    assert r.returncode != 0 and task_status(shimd, cid)[0] == "RUNNING"
    ctr_ok(shimd, "task", "kill", "--signal", "SIGKILL", cid)
    wait_stopped(shimd, cid)
    assert task_status(shimd, cid)[0] == "STOPPED"
    r = ctr(shimd, "task", "delete", cid)
    assert r.returncode == 0 and "exit code 137" in r.stderr, r.stderr
    assert task_status(shimd, cid) == ("", 0)
    assert not os.path.exists(f"/proc/{pid}")


def test_kill_all(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid,
           "sh", "-c", "sleep 1000 & sleep 1000 & wait")
    for _ in range(600):                 # the shell starts its two sleeps
        if len(ctr_ok(shimd, "task", "ps", cid).splitlines()) == 4:
            break
        time.sleep(0.05)
    assert len(ctr_ok(shimd, "task", "ps", cid).splitlines()) == 4
    ctr_ok(shimd, "task", "kill", "--all", "--signal", "SIGKILL", cid)
    wait_stopped(shimd, cid)
    assert task_status(shimd, cid)[0] == "STOPPED"
    ctr_ok(shimd, "task", "kill", "--all", "--signal", "SIGKILL", cid)   # stopped: still 0


def test_delete_force_running(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    pid = task_status(shimd, cid)[1]
    ctr_ok(shimd, "task", "delete", "--force", cid)
    assert task_status(shimd, cid) == ("", 0)
    assert not os.path.exists(f"/proc/{pid}/cgroup")


def test_exec_user_cwd(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    r = ctr(shimd, "task", "exec", "--exec-id", "e1", "--user", "1000", "--cwd", "/tmp",
            cid, "sh", "-c", "id -u; pwd; exit 4")
    assert (r.returncode, r.stdout.split()) == (4, ["1000", "/tmp"]), r.stderr


def test_exec_tty(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    code, out = in_pty(daemons.ctr(shimd, "task", "exec", "-t", "--exec-id", "e2", cid,
                                   "sh", "-c", "tty; " + WAIT_SIZE + "; exit 6"))
    assert code == 6 and "/dev/pts/" in out and "size 33 111" in out, out


def _cgroup2_file(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        rel = next(line.rstrip("\n").split(":", 2)[2] for line in f if line.startswith("0::"))
    return f"/sys/fs/cgroup{rel}/{name}"


def test_metrics(shimd, cid):
    """`ctr task metrics`: cgroups v1 Metrics on a v1/hybrid host, v2 Metrics on cgroup2."""
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, "--memory-limit", str(96 << 20), IMG, cid,
           "sleep", "1000")
    pid = task_status(shimd, cid)[1]
    rows = dict(line.split(None, 1) for line in
                ctr_ok(shimd, "task", "metrics", cid).splitlines()[3:] if line.strip())
    rows = {k: v.strip() for k, v in rows.items()}
    assert rows["pids.current"] == "1"
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert rows["memory.usage_limit"] == str(96 << 20)
        assert 0 < int(rows["memory.usage"]) <= \
            int(read(_cgroup2_file(pid, "memory.current"))) * 4
        assert int(rows["cpu.usage_usec"]) > 0
    else:
        assert rows["memory.limit_in_bytes"] == str(96 << 20) == \
            read(cgroup_file(pid, "memory", "memory.limit_in_bytes"))
        assert 0 < int(rows["memory.usage_in_bytes"]) <= \
            int(read(cgroup_file(pid, "memory", "memory.usage_in_bytes"))) * 4
        assert int(rows["cpuacct.usage"]) > 0


def test_events(shimd, cid, tmp_path):
    out = tmp_path / "events"
    with open(out, "wb") as f:
        watcher = subprocess.Popen(daemons.ctr(shimd, "events"), stdout=f,
                                   stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
        ctr_ok(shimd, "task", "exec", "--exec-id", "x1", cid, "true")
        ctr_ok(shimd, "task", "pause", cid)
        ctr_ok(shimd, "task", "resume", cid)
        ctr_ok(shimd, "task", "kill", "--signal", "SIGKILL", cid)
        wait_stopped(shimd, cid)
        ctr(shimd, "task", "delete", cid)
        for _ in range(200):
            if "/tasks/delete" in out.read_text():
                break
            time.sleep(0.05)
    finally:
        watcher.terminate()
        watcher.wait()
    topics = [line.split()[5] for line in out.read_text().splitlines()
              if f'"container_id":"{cid}"' in line]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added",
                      "/tasks/exec-started", "/tasks/exit", "/tasks/paused", "/tasks/resumed",
                      "/tasks/exit", "/tasks/delete"], out.read_text()
    exits = [line for line in out.read_text().splitlines() if "/tasks/exit" in line and cid in line]
    assert '"id":"x1"' in exits[0] and '"exit_status":137' in exits[1]


def test_oom_event(shimd, cid, tmp_path):
    """A container over its memory limit is OOM-killed: TaskOOM, then its exit (137)."""
    out = tmp_path / "events"
    with open(out, "wb") as f:
        watcher = subprocess.Popen(daemons.ctr(shimd, "events"), stdout=f,
                                   stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        r = ctr(shimd, "run", "--rm", "--runtime", RUNTIME, "--memory-limit", str(32 << 20),
                IMG, cid, "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); "
                                      "echo survived")
        assert (r.returncode, r.stdout) == (137, ""), r.stderr
        for _ in range(200):
            if "/tasks/delete" in out.read_text():
                break
            time.sleep(0.05)
    finally:
        watcher.terminate()
        watcher.wait()
    topics = [line.split()[5] for line in out.read_text().splitlines()
              if f'"container_id":"{cid}"' in line]
    assert "/tasks/oom" in topics, out.read_text()
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit")


def _criu_works() -> bool:
    return subprocess.run(["criu", "check"], capture_output=True).returncode == 0 \
        if shutil.which("criu") else False


def test_checkpoint_reaches_pyoci(shimd, cid, tmp_path):
    """ctr c checkpoint --task: containerd pauses the task, the shim runs pyoci checkpoint
    (CRIU) into containerd's directory, then containerd resumes the task. Where CRIU cannot
    work (criu check fails: this host's kernel) pyoci's reason is the error ctr prints and the
    container goes on running."""
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    pid = task_status(shimd, cid)[1]
    r = ctr(shimd, "container", "checkpoint", "--task", cid, f"localhost/cp-{cid}:1")
    if _criu_works():
        assert r.returncode == 0, r.stderr
        assert f"localhost/cp-{cid}:1" in ctr_ok(shimd, "image", "ls", "-q")
        ctr(shimd, "image", "rm", f"localhost/cp-{cid}:1")
    else:
        assert r.returncode != 0
        assert "pyoci checkpoint: checkpoint: CRIU cannot work on this host" in r.stderr, \
            r.stderr
    assert task_status(shimd, cid) == ("RUNNING", pid)


def test_containerd_restart(shimd, cid):
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    status, pid = task_status(shimd, cid)
    daemons.restart_containerd(shimd)
    assert task_status(shimd, cid) == (status, pid)
    r = ctr(shimd, "task", "exec", "--exec-id", "after", cid, "sh", "-c", "echo back; exit 9")
    assert (r.returncode, r.stdout) == (9, "back\n"), r.stderr
    ctr_ok(shimd, "task", "kill", "--signal", "SIGKILL", cid)
    wait_stopped(shimd, cid)
    r = ctr(shimd, "task", "delete", cid)
    assert r.returncode == 0 and "exit code 137" in r.stderr, r.stderr


def test_shim_process_per_container(shimd, cid):
    """One shim per ctr container: Connect's shim pid runs our shim and exits with it."""
    ctr_ok(shimd, "run", "-d", "--runtime", RUNTIME, IMG, cid, "sleep", "1000")
    pid = task_status(shimd, cid)[1]
    with open(f"/proc/{pid}/status") as f:
        ppid = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        assert b"containerd-shim-pyoci-v2" in f.read()
    ctr_ok(shimd, "task", "kill", "--signal", "SIGKILL", cid)
    wait_stopped(shimd, cid)
    ctr_ok(shimd, "task", "delete", cid)
    for _ in range(200):
        reap_zombies()
        if not os.path.exists(f"/proc/{ppid}"):
            break
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{ppid}")


# --- CRI ----------------------------------------------------------------------------------

@pytest.fixture
def pod(shimd, tmp_path):
    if subprocess.run(["/usr/bin/python3", "-c", "import grpc"], capture_output=True).returncode:
        pytest.skip("the CRI client needs python3-grpcio")
    sandbox = {"name": unique("pod"), "log_directory": str(tmp_path / "logs")}
    pid = cri(shimd, "runp", sandbox=sandbox, runtime_handler=HANDLER)["id"]
    yield {"id": pid, "sandbox": sandbox, "logs": tmp_path / "logs"}
    cri_quiet = ["/usr/bin/python3", os.path.join(REPO, "scripts", "clients", "cri.py"),
                 shimd.address]
    sh(cri_quiet + ["stopp", json.dumps({"id": pid})])
    sh(cri_quiet + ["rmp", json.dumps({"id": pid})])


def cri_container(d, pod: dict, name: str, *command: str) -> str:
    c = cri(d, "create", pod=pod["id"], sandbox=pod["sandbox"],
            container={"name": name, "image": IMG, "command": list(command)})["id"]
    cri(d, "start", id=c)
    return c


def k8s_pid(d, c: str) -> int:
    return next(int(line.split()[1]) for line in
                ok(daemons.ctr(d, "task", "ls", namespace="k8s.io")).splitlines()[1:]
                if line.split()[0] == c)


def shim_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("PPid:")))


def test_cri_pod_container_logs(shimd, pod):
    c = cri_container(shimd, pod, "c1", "sh", "-c", "echo out; echo err >&2; exit 3")
    st = wait_exited(shimd, c)
    assert st["exit_code"] == 3
    log = (pod["logs"] / "c1.log").read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in log) == ["stderr F err", "stdout F out"]
    cri(shimd, "rm", id=c)


def test_cri_containerd_restart(shimd, pod):
    """The pod's shim outlives containerd: after the restart CRI still sees the container
    running, execs in it and stops it."""
    c = cri_container(shimd, pod, "r1", "sleep", "1000")
    pid = k8s_pid(shimd, c)
    daemons.restart_containerd(shimd)
    for _ in range(600):                 # CRI comes up after containerd's socket
        if sh(["/usr/bin/python3", os.path.join(REPO, "scripts", "clients", "cri.py"),
               shimd.address, "status", json.dumps({"id": c})]).returncode == 0:
            break
        time.sleep(0.1)
    assert cri(shimd, "status", id=c)["state"] == "RUNNING"
    assert k8s_pid(shimd, c) == pid
    r = cri(shimd, "exec", id=c, cmd=["sh", "-c", "echo still; exit 2"], timeout=60)
    assert (r["stdout"], r["exit_code"]) == ("still\n", 2)
    cri(shimd, "stop", id=c, timeout=0)
    assert cri(shimd, "status", id=c)["state"] == "EXITED"
    cri(shimd, "rm", id=c)


def test_cri_one_shim_per_pod(shimd, pod):
    """The pod's containers share the sandbox's shim (io.kubernetes.cri.sandbox-id)."""
    a = cri_container(shimd, pod, "a", "sleep", "1000")
    b = cri_container(shimd, pod, "b", "sleep", "1000")
    sandbox_pid = k8s_pid(shimd, pod["id"])
    assert shim_of(k8s_pid(shimd, a)) == shim_of(k8s_pid(shimd, b)) == shim_of(sandbox_pid)
    for c in (a, b):
        cri(shimd, "stop", id=c, timeout=0)
        cri(shimd, "rm", id=c)


def test_cri_stop(shimd, pod):
    c = cri_container(shimd, pod, "c2", "sh", "-c", 'trap "exit 7" TERM; '
                      "while :; do sleep 0.1; done")
    assert cri(shimd, "status", id=c)["state"] == "RUNNING"
    cri(shimd, "stop", id=c, timeout=30)
    assert cri(shimd, "status", id=c) == {"state": "EXITED", "exit_code": 7,
                                          "reason": "Error"}
    cri(shimd, "rm", id=c)


def test_cri_exec_sync(shimd, pod):
    c = cri_container(shimd, pod, "c3", "sleep", "1000")
    r = cri(shimd, "exec", id=c, cmd=["sh", "-c", "echo e; echo f >&2; exit 5"], timeout=60)
    assert (r["stdout"], r["stderr"], r["exit_code"]) == ("e\n", "f\n", 5)
    cri(shimd, "stop", id=c, timeout=0)
    cri(shimd, "rm", id=c)


def test_cri_update(shimd, pod):
    c = cri_container(shimd, pod, "c4", "sleep", "1000")
    cri(shimd, "update", id=c, memory=64 << 20, cpu_shares=512)
    pid = k8s_pid(shimd, c)
    assert read(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == str(64 << 20)
    assert read(cgroup_file(pid, "cpu", "cpu.shares")) == "512"
    cri(shimd, "stop", id=c, timeout=0)
    cri(shimd, "rm", id=c)


def test_cri_stats(shimd, pod):
    c = cri_container(shimd, pod, "c5", "sh", "-c", "x=0; while [ $x -lt 20000 ]; do "
                      "x=$((x+1)); done; sleep 1000")
    pid = k8s_pid(shimd, c)
    for _ in range(100):
        st = cri(shimd, "stats", id=c)
        if st["cpu_ns"] and st["memory_working_set"]:
            break
        time.sleep(0.1)
    assert st["cpu_ns"] > 0 and st["memory_working_set"] > 0, st
    assert st["memory_working_set"] <= \
        int(read(cgroup_file(pid, "memory", "memory.usage_in_bytes"))) * 2
    cri(shimd, "stop", id=c, timeout=0)
    cri(shimd, "rm", id=c)

