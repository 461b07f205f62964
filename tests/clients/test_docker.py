"""dockerd 20.10 (`--add-runtime pyoci=...`, its own managed containerd and the
io.containerd.runc.v2 shim) with `docker run --runtime runc|pyoci --network none`. Docker adds
a prestart hook (libnetwork-setkey) and sysctls to every bundle, `docker top` calls
`ps --format json`, `docker update` sends zeros for what it does not change."""

from __future__ import annotations

import time

import pytest

from clientlib import cgroup_file, needs, ok, read, sh, unique

import daemons

pytestmark = needs("dockerd", "/usr/bin/docker", "containerd", package="docker.io")

IMG = daemons.BUSYBOX_IMAGE
TRAP = 'trap "exit 7" TERM; echo started; while :; do sleep 0.1; done'


def dk(d, *args: str, **kw):
    return sh(daemons.docker(d, *args), d.env, **kw)


def dk_ok(d, *args: str, **kw) -> str:
    return ok(daemons.docker(d, *args), d.env, **kw)


@pytest.fixture
def name(dockerd):
    n = unique("dk")
    yield n
    dk(dockerd, "rm", "--force", n)


def run_args(rt: str) -> list[str]:
    return ["run", "--runtime", rt, "--network", "none"]


def start_detached(d, rt: str, name: str, *cmd: str) -> int:
    dk_ok(d, *run_args(rt), "-d", "--name", name, IMG, *(cmd or ("sh", "-c", TRAP)))
    if not cmd:
        for _ in range(600):
            if "started" in dk_ok(d, "logs", name):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{name} never said it started")
    return int(inspect(d, name, "{{.State.Pid}}"))


def inspect(d, name: str, fmt: str) -> str:
    return dk_ok(d, "inspect", "--format", fmt, name).strip()


def test_run_exit_code_and_output(dockerd, rt):
    r = dk(dockerd, *run_args(rt), "--rm", IMG, "sh", "-c", "echo hi; exit 3")
    assert (r.returncode, r.stdout) == (3, "hi\n"), r.stderr


def test_run_tty(dockerd, rt):
    out = dk_ok(dockerd, *run_args(rt), "--rm", "-t", IMG, "sh", "-c", "tty; echo x")
    assert out == "/dev/pts/0\r\nx\r\n"


def test_run_detached_stop(dockerd, rt, name):
    start_detached(dockerd, rt, name)
    assert inspect(dockerd, name, "{{.State.Status}}") == "running"
    dk_ok(dockerd, "stop", "-t", "30", name)
    assert inspect(dockerd, name, "{{.State.Status}} {{.State.ExitCode}}") == "exited 7"


def test_kill_restart_rm(dockerd, rt, name):
    start_detached(dockerd, rt, name)
    dk_ok(dockerd, "kill", name)  # SIGKILL by default
    assert dk_ok(dockerd, "wait", name).strip() == "137"
    dk_ok(dockerd, "restart", "-t", "30", name)
    assert inspect(dockerd, name, "{{.State.Status}}") == "running"
    dk_ok(dockerd, "kill", "--signal", "TERM", name)
    assert dk_ok(dockerd, "wait", name).strip() == "7"
    dk_ok(dockerd, "rm", name)
    assert dk(dockerd, "inspect", name).returncode == 1


def test_top(dockerd, rt, name):
    pid = start_detached(dockerd, rt, name)
    rows = [line.split() for line in dk_ok(dockerd, "top", name, "-o", "pid,args").splitlines()]
    assert rows[0] == ["PID", "COMMAND"]
    assert [str(pid), "sh", "-c"] == rows[1][:3]


def test_pause_unpause(dockerd, rt, name):
    pid = start_detached(dockerd, rt, name)
    dk_ok(dockerd, "pause", name)
    assert inspect(dockerd, name, "{{.State.Status}}") == "paused"
    assert read(cgroup_file(pid, "freezer", "freezer.state")) == "FROZEN"
    dk_ok(dockerd, "unpause", name)
    assert inspect(dockerd, name, "{{.State.Status}}") == "running"
    dk_ok(dockerd, "stop", "-t", "30", name)
    assert inspect(dockerd, name, "{{.State.ExitCode}}") == "7"


def test_update_sends_zeros_for_unchanged(dockerd, rt, name):
    pid = start_detached(dockerd, rt, name)
    dk_ok(dockerd, "update", "--memory", "64m", "--memory-swap", "128m", name)
    assert read(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == str(64 << 20)
    # only cpu-shares changes: the memory values docker sends as 0 must leave the limit alone
    dk_ok(dockerd, "update", "--cpu-shares", "512", name)
    assert read(cgroup_file(pid, "cpu", "cpu.shares")) == "512"
    assert read(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == str(64 << 20)
    dk_ok(dockerd, "update", "--pids-limit", "100", name)
    assert read(cgroup_file(pid, "pids", "pids.max")) == "100"


def test_bundle_hook_and_sysctls(dockerd, rt):
    """The libnetwork-setkey prestart hook and docker's default sysctls are applied."""
    out = dk_ok(dockerd, *run_args(rt), "--rm", "--sysctl", "net.ipv4.ip_forward=1", IMG,
                "cat", "/proc/sys/net/ipv4/ip_forward")
    assert out == "1\n"


def test_exec(dockerd, rt, name):
    start_detached(dockerd, rt, name, "sleep", "1000")
    out = dk_ok(dockerd, "exec", "-e", "FOO=bar", "-u", "1000", "-w", "/tmp", name,
                "sh", "-c", "echo $FOO; id -u; pwd")
    assert out.split() == ["bar", "1000", "/tmp"]
    assert dk(dockerd, "exec", name, "sh", "-c", "exit 5").returncode == 5
    assert dk_ok(dockerd, "exec", "-t", name, "tty").startswith("/dev/pts/")


# a missing program exits 127, one that cannot be executed 126: docker chooses them from the
# runtime's error text, case-sensitively ("no such file or directory", "executable file not
# found", "permission denied"), as runc words it; anything else is 125. Its exec (20.10)
# answers 126 to every failure to start.
NOT_RUNNABLE = [("/nonexistent", 127), ("nonexistent", 127), ("/etc/passwd", 126)]


def test_exit_codes_of_a_program_that_cannot_run(dockerd, rt, name):
    got = [dk(dockerd, *run_args(rt), "--rm", IMG, prog).returncode
           for prog, _ in NOT_RUNNABLE]
    start_detached(dockerd, rt, name)
    got += [dk(dockerd, "exec", name, prog).returncode for prog, _ in NOT_RUNNABLE]
    assert got == [code for _, code in NOT_RUNNABLE] + [126] * len(NOT_RUNNABLE), got
