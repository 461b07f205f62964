"""`exec`: a new process in a running container, through the CLI, with pyoci and runc side by
side on the same bundle (the `runtime` fixture) where their behaviour must match."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from support.harness import kill_and_reap, reap_zombies
from support.rootfs import PASSWD

pytestmark = pytest.mark.integration

NAMESPACES = ("mnt", "pid", "net", "ipc", "uts")


# --- helpers --------------------------------------------------------------------------------

def start_container(rt, bundle_factory, config, cid="x1", args=("sleep", "1000")) -> int:
    """Run a detached container; returns its init's host pid."""
    config["process"]["args"] = list(args)
    b = bundle_factory(config)
    rt("run", "-d", "--bundle", b, cid, check=True)
    return rt.state(cid)["pid"]


def wait_for(predicate, what: str, timeout: float = 30.0):
    """Poll until predicate() is truthy (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def pids_in_pid_ns(init_pid: int) -> list[int]:
    """Host pids of every live process in init_pid's PID namespace."""
    want = os.readlink(f"/proc/{init_pid}/ns/pid")
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != want:
                continue
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        out.append(int(name))
    return out


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def ns_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def popen(rt, *args, out=None):
    """Start a runtime command in the background, output to a file (never a pipe)."""
    out = out or tempfile.TemporaryFile()
    return subprocess.Popen(rt.argv(*args), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT), out


def file_text(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


# --- joining the container -------------------------------------------------------------------

def test_exec_joins_the_container(runtime, bundle_factory, config):
    init = start_container(runtime, bundle_factory, config)
    links = " ".join(f"/proc/self/ns/{n}" for n in NAMESPACES)
    r = runtime("exec", "x1", "sh", "-c", f"hostname; echo pid=$$; ps -o pid,args; "
                f"for l in {links}; do readlink $l; done; touch /x 2>/dev/null || echo ro")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "pyoci"
    assert lines[1].startswith("pid=") and lines[1] != "pid=1"
    assert re.search(r"^\s*1\s+sleep 1000$", r.stdout, re.M), r.stdout   # ps shows the init
    assert lines[-len(NAMESPACES) - 1:-1] == [os.readlink(f"/proc/{init}/ns/{n}")
                                              for n in NAMESPACES]
    assert lines[-1] == "ro"


def test_exec_env_user_groups_cwd_match_runc(pyoci, runc, bundle_factory, config):
    outs = {}
    for rt in (pyoci, runc):
        start_container(rt, bundle_factory, config)
        r = rt("exec", "-e", "FOO=bar", "--user", "1000:1000", "--additional-gids", "29",
               "--cwd", "/tmp", "x1", "sh", "-c", "id; pwd; echo $FOO $HOME $TERM")
        assert r.returncode == 0, f"{rt.name}: {r.stderr}"
        outs[rt.name] = r.stdout
    assert outs["pyoci"].splitlines() == [
        "uid=1000(user) gid=1000(user) groups=29(audio)", "/tmp", "bar /home/user xterm"]
    assert outs["pyoci"] == outs["runc"]


def test_exec_cap_is_added_to_the_sets(pyoci, runc, bundle_factory, config):
    outs = {}
    for rt in (pyoci, runc):
        start_container(rt, bundle_factory, config)
        r = rt("exec", "--cap", "CAP_SYS_ADMIN", "x1", "grep", "^Cap", "/proc/self/status")
        assert r.returncode == 0, f"{rt.name}: {r.stderr}"
        outs[rt.name] = r.stdout
    sets = dict(line.split(":\t") for line in outs["pyoci"].splitlines())
    for s in ("CapPrm", "CapEff", "CapBnd"):
        assert int(sets[s], 16) >> 21 & 1, f"CAP_SYS_ADMIN not in {s}"
    # never inheritable (CVE-2022-29162); ambient needs inheritable
    assert int(sets["CapInh"], 16) == int(sets["CapAmb"], 16) == 0
    assert outs["pyoci"] == outs["runc"]


def test_exec_no_new_privs(runtime, bundle_factory, config):
    config["process"]["noNewPrivileges"] = False
    start_container(runtime, bundle_factory, config)
    off = runtime("exec", "x1", "grep", "^NoNewPrivs", "/proc/self/status")
    on = runtime("exec", "--no-new-privs", "x1", "grep", "^NoNewPrivs", "/proc/self/status")
    assert off.stdout.split() == ["NoNewPrivs:", "0"], off.stderr
    assert on.stdout.split() == ["NoNewPrivs:", "1"], on.stderr


@pytest.mark.parametrize("script,code", [("true", 0), ("exit 7", 7), ("kill -9 $$", 137)])
def test_exec_exit_code(runtime, bundle_factory, config, script, code):
    start_container(runtime, bundle_factory, config)
    r = runtime("exec", "x1", "sh", "-c", script)
    assert r.returncode == code, r.stderr


def test_exec_process_file(runtime, bundle_factory, config, tmp_path):
    start_container(runtime, bundle_factory, config)
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps({
        "args": ["sh", "-c", "echo $A; pwd; id -u; grep ^CapEff /proc/self/status"],
        "env": ["PATH=/bin:/usr/bin", "A=from-file"], "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000}, "terminal": False,
    }))
    r = runtime("exec", "--process", str(pf), "x1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-file", "/tmp", "1000", "CapEff:", "0000000000000000"]


def test_exec_process_file_decides_over_process_flags(runtime, bundle_factory, config,
                                                     tmp_path):
    """With --process the file is the whole process: --tty, --env... are ignored, as runc
    does (conmon passes --tty along with --process)."""
    start_container(runtime, bundle_factory, config)
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps({"args": ["sh", "-c", "echo A=$A; tty || true"],
                              "env": ["PATH=/bin"], "cwd": "/", "terminal": False}))
    r = runtime("exec", "--process", str(pf), "-e", "A=1", "--tty", "x1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["A=", "not a tty"]


def test_exec_process_file_errors(pyoci, bundle_factory, config, tmp_path):
    init = start_container(pyoci, bundle_factory, config)
    pf = tmp_path / "process.json"
    for doc, word in (("{not json", "--process"), ("[]", "--process"),
                      (json.dumps({"args": [], "cwd": "/"}), "process.args"),
                      (json.dumps({"args": ["true"], "cwd": "tmp"}), "process.cwd")):
        pf.write_text(doc)
        r = pyoci("exec", "--process", str(pf), "x1")
        assert r.returncode == 1 and word in r.stderr, (doc, r.stderr)
        assert len(r.stderr.splitlines()) == 1
    r = pyoci("exec", "--process", str(pf), "x1", "true")     # a command too
    assert r.returncode == 1
    assert pids_in_pid_ns(init) == [init]


def test_exec_detach_pid_file(runtime, bundle_factory, config, tmp_path):
    init = start_container(runtime, bundle_factory, config)
    pidfile = tmp_path / "exec.pid"
    r = runtime("exec", "-d", "--pid-file", str(pidfile), "x1", "sleep", "999", reap=False)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read() == b"sleep\x00999\x00"
        with open(f"/proc/{pid}/status") as f:
            ppid = int(re.search(r"^PPid:\s+(\d+)", f.read(), re.M).group(1))
        assert ppid == os.getpid()        # reparented to the caller, a subreaper
        assert pid in pids_in_pid_ns(init)
    finally:
        kill_and_reap(pid)


def test_no_runtime_process_stays_in_the_container(pyoci, bundle_factory, config):
    init = start_container(pyoci, bundle_factory, config)
    busybox = exe_of(init)
    r = pyoci("exec", "-d", "x1", "sleep", "999", reap=False)
    assert r.returncode == 0, r.stderr
    r = pyoci("exec", "x1", "true")
    assert r.returncode == 0, r.stderr
    pids = pids_in_pid_ns(init)
    try:
        assert len(pids) == 2
        assert [exe_of(p) for p in pids] == [busybox, busybox]
    finally:
        # the detached sleep is this (subreaper) test's child: a zombie of it would keep
        # the init in its PID namespace's teardown, and delete --force would leave x1's
        # cgroups behind (a later test then finds an x1 cgroup pyoci did not create)
        for pid in pids:
            if pid != init:
                kill_and_reap(pid)


def test_exec_signals_are_forwarded(runtime, bundle_factory, config, tmp_path):
    start_container(runtime, bundle_factory, config)
    p, out = popen(runtime, "exec", "x1", "sh", "-c",
                   "trap 'echo got-term; exit 3' TERM; echo ready; "
                   "while :; do sleep 0.05; done")
    try:
        wait_for(lambda: "ready" in file_text(out), "the process to start")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 3
        assert "got-term" in file_text(out)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        out.close()
        reap_zombies()


# --- terminal ------------------------------------------------------------------------------

def test_exec_tty_over_console_socket(runtime, bundle_factory, config, tmp_path):
    start_container(runtime, bundle_factory, config)
    path = str(tmp_path / "console.sock")
    pidfile = tmp_path / "exec.pid"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)
        r = runtime("exec", "-t", "-d", "--console-socket", path, "--pid-file", str(pidfile),
                    "x1", "sh", reap=False)
        assert r.returncode == 0, r.stderr
        pid = int(pidfile.read_text())
        conn, _ = srv.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    master = fds[0]
    try:
        os.write(master, b"echo hi\n")
        got = b""

        def read_hi():
            nonlocal got
            got += os.read(master, 4096)
            return b"\nhi\r\n" in got

        wait_for(read_hi, "the shell's answer")
        os.write(master, b"exit\n")
    finally:
        os.close(master)
        kill_and_reap(pid)


def test_exec_tty_in_the_foreground_is_proxied(pyoci, bundle_factory, config):
    # (runc insists on a controlling terminal of its own here: /dev/tty)
    start_container(pyoci, bundle_factory, config)
    r = pyoci("exec", "-t", "x1", "tty")
    assert r.returncode == 0, r.stderr
    assert "/dev/pts/" in r.stdout


def test_exec_tty_detached_needs_a_console_socket(pyoci, bundle_factory, config):
    init = start_container(pyoci, bundle_factory, config)
    r = pyoci("exec", "-t", "-d", "x1", "sh")
    assert r.returncode == 1 and "console-socket" in r.stderr
    assert pids_in_pid_ns(init) == [init]


# --- container states ----------------------------------------------------------------------

def test_exec_in_a_stopped_container_fails(runtime, bundle_factory, config):
    start_container(runtime, bundle_factory, config, args=["true"])
    wait_for(lambda: (reap_zombies(), runtime.state("x1")["status"] == "stopped")[1],
             "the container to stop")
    r = runtime("exec", "x1", "true")
    assert r.returncode != 0 and "stopped" in r.stderr
    if runtime.name == "pyoci":
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1


def test_exec_in_a_paused_container(pyoci, bundle_factory, config, tmp_path):
    from pyoci import cgroups

    init = start_container(pyoci, bundle_factory, config)
    with open(os.path.join(pyoci.root, "x1", "state.json")) as f:
        cg = cgroups.from_state(json.load(f)["cgroup"])
    pidfile = tmp_path / "exec.pid"
    cg.freeze()
    p = None
    try:
        assert pyoci.state("x1")["status"] == "paused"
        r = pyoci("exec", "x1", "true")
        assert r.returncode == 1 and "paused" in r.stderr and "--ignore-paused" in r.stderr
        assert pids_in_pid_ns(init) == [init]
        # with --ignore-paused the process joins the frozen cgroup and runs once thawed
        p, out = popen(pyoci, "exec", "--ignore-paused", "-d", "--pid-file", str(pidfile),
                       "x1", "sleep", "999")
    finally:
        cg.thaw()
    try:
        assert p.wait(timeout=60) == 0, file_text(out)
        pid = int(pidfile.read_text())
        assert pid in pids_in_pid_ns(init)
        kill_and_reap(pid)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        out.close()


def test_exec_errors_leave_nothing(pyoci, bundle_factory, config):
    init = start_container(pyoci, bundle_factory, config)
    for args in (["nosuch"], ["/bin/nosuch"], ["--user", "abc", "x1", "true"],
                 ["--cap", "CAP_NOPE", "x1", "true"], ["--cwd", "/nonexistent", "x1", "true"]):
        full = args if args[0].startswith("--") else ["x1", *args]
        r = pyoci("exec", *full)
        assert r.returncode == 1, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert pids_in_pid_ns(init) == [init], args
    assert pyoci("exec", "nosuchcontainer", "true").returncode == 1
    assert pyoci("exec", "x1").returncode == 1       # no command


# --- security ------------------------------------------------------------------------------

def test_exec_gets_the_container_seccomp(pyoci, runc, bundle_factory, config):
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 1}],
    }
    outs = {}
    for rt in (pyoci, runc):
        start_container(rt, bundle_factory, config)
        r = rt("exec", "x1", "sh", "-c",
               "grep '^Seccomp:' /proc/self/status; mkdir /dev/shm/d 2>/dev/null || echo denied")
        assert r.returncode == 0, f"{rt.name}: {r.stderr}"
        outs[rt.name] = r.stdout
    assert outs["pyoci"].split() == ["Seccomp:", "2", "denied"]
    assert outs["pyoci"] == outs["runc"]


@pytest.mark.parametrize("userns", [False, True], ids=["host-userns", "userns"])
def test_exe_of_the_joining_process_is_not_openable(pyoci, bundle_factory, config, tmp_path,
                                                    userns):
    """Hold pyoci's process inside the container while it is still pyoci (its HOME lookup
    blocks on /etc/passwd made a fifo) and try /proc/PID/exe from inside. In a user
    namespace that maps host root (so joining it resets nothing) with every capability in
    it, only pyoci's non-dumpability stands in the way.
    (Not with runc: its init always reads /etc/passwd, the container could not start.)"""
    from pyoci.linux import capabilities

    runtime = pyoci
    config["process"]["env"].append("HOME=/root")    # the init and the probe need no passwd
    config["process"]["args"] = ["sleep", "1000"]
    if userns:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
        config["process"]["capabilities"] = {s: capabilities.names()
                                             for s in ("bounding", "effective", "permitted")}
    b = bundle_factory(config)
    fifo = os.path.join(b, "rootfs", "etc", "passwd")
    os.unlink(fifo)
    os.mkfifo(fifo, 0o644)
    runtime("run", "-d", "--bundle", b, "x1", check=True, env={**os.environ, "HOME": "/root"})
    init = runtime.state("x1")["pid"]
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps({"args": ["true"], "env": ["PATH=/bin"], "cwd": "/",
                              "user": {"uid": 0, "gid": 0}}))
    p, out = popen(runtime, "exec", "--process", str(pf), "x1")
    try:
        joining = wait_for(lambda: [q for q in pids_in_pid_ns(init) if q != init],
                           "the joining process")
        assert len(joining) == 1
        n = ns_pid(joining[0])
        assert exe_of(joining[0]) != exe_of(init)       # still the runtime, not `true`
        r = runtime("exec", "x1", "sh", "-c", f"readlink /proc/{n}/exe || echo denied; "
                    f"cat /proc/{n}/exe >/dev/null 2>&1 || echo denied; readlink /proc/1/exe")
        assert r.stdout.split() == ["denied", "denied", "/bin/busybox"], r.stdout + r.stderr
    finally:
        # let the blocked process go on (a writer for the fifo), then wait for it
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, PASSWD.encode())
            os.close(fd)
        except OSError:
            pass
        try:
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            reap_zombies()
    assert p.returncode == 0


def test_exec_preserve_fds(runtime, bundle_factory, config, tmp_path):
    start_container(runtime, bundle_factory, config)
    data = tmp_path / "data"
    data.write_text("preserved\n")
    with open(data) as f3, open(data) as f4:
        # fd 3 preserved, fd 4 open in the caller but not preserved
        r = runtime("exec", "--preserve-fds", "1", "x1", "sh", "-c",
                    "for n in 3 4 5; do test -e /proc/$$/fd/$n && echo fd$n; done; cat <&3",
                    pass_fds=(3,),
                    preexec_fn=lambda: (os.dup2(f3.fileno(), 3), os.dup2(f4.fileno(), 4)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["fd3", "preserved"]
