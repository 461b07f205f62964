"""podman 4.3 + conmon with `--runtime runc|pyoci` (both in [engine.runtimes]; pyoci in
runtime_supports_json, so podman passes it --log-format=json --log=FILE and no --root)."""

from __future__ import annotations

import time

import pytest

from clientlib import RUNTIMES, cgroup_file, needs, ok, read, sh, unique

import daemons

pytestmark = needs("podman", "conmon", package="podman, conmon")

IMG = daemons.BUSYBOX_IMAGE
# a container that exits 7 on SIGTERM, and says when it is ready
TRAP = 'trap "exit 7" TERM; echo started; while :; do sleep 0.1; done'


def pm(d, *args: str, **kw):
    return sh(daemons.podman(d, *args), d.env, **kw)


def pm_ok(d, *args: str, **kw) -> str:
    return ok(daemons.podman(d, *args), d.env, **kw)


@pytest.fixture
def name(podman):
    n = unique("pm")
    yield n
    pm(podman, "rm", "--force", "--time", "0", n)


def start_detached(d, rt: str, name: str, *cmd: str, opts: tuple = ()) -> None:
    pm_ok(d, "run", "--runtime", rt, "-d", "--name", name, *opts, IMG, *(cmd or
          ("sh", "-c", TRAP)))
    wait_for_log(d, name, "started" if not cmd else "")


def wait_for_log(d, name: str, text: str) -> None:
    """Wait until the container's log shows text (readiness, not a timing assertion)."""
    for _ in range(600):
        if text in pm_ok(d, "logs", name):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}: {text!r} never appeared in its log")


def inspect(d, name: str, fmt: str) -> str:
    return pm_ok(d, "inspect", "--format", fmt, name).strip()


def test_run_exit_code_and_output(podman, rt):
    r = pm(podman, "run", "--runtime", rt, "--rm", IMG, "sh", "-c", "echo hi; exit 3")
    assert (r.returncode, r.stdout) == (3, "hi\n"), r.stderr


def test_run_ulimits_and_env(podman, rt):
    out = pm_ok(podman, "run", "--runtime", rt, "--rm", "-e", "FOO=bar", "-w", "/tmp",
                "-u", "1000", IMG, "sh", "-c", 'ulimit -n; echo $FOO; pwd; id -u')
    assert out.split() == ["20000", "bar", "/tmp", "1000"]


def test_run_tty(podman, rt):
    out = pm_ok(podman, "run", "--runtime", rt, "--rm", "-t", IMG, "sh", "-c", "tty; echo x")
    assert out == "/dev/pts/0\r\nx\r\n"


def test_run_detached_logs_stop(podman, rt, name):
    start_detached(podman, rt, name)
    assert inspect(podman, name, "{{.State.Status}}") == "running"
    stamped = pm_ok(podman, "logs", "-t", name).strip()
    assert stamped.endswith(" started") and stamped[:4].isdigit()
    pm_ok(podman, "stop", "-t", "30", name)
    assert inspect(podman, name, "{{.State.Status}} {{.State.ExitCode}}") == "exited 7"


def test_kill_restart_rm(podman, rt, name):
    start_detached(podman, rt, name)
    pm_ok(podman, "kill", "--signal", "KILL", name)
    assert pm_ok(podman, "wait", name).strip() == "137"
    pm_ok(podman, "restart", name)
    assert inspect(podman, name, "{{.State.Status}} {{.RestartCount}}") in ("running 1",
                                                                              "running 0")
    pm_ok(podman, "kill", name)  # SIGKILL by default
    pm_ok(podman, "wait", name)
    pm_ok(podman, "rm", name)
    assert pm(podman, "container", "exists", name).returncode == 1


def test_top_and_stats(podman, rt, name):
    start_detached(podman, rt, name)
    top = pm_ok(podman, "top", name, "pid", "args").splitlines()
    assert top[0].split() == ["PID", "COMMAND"]
    assert top[1].split()[:2] == ["1", "sh"]
    stats = pm_ok(podman, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", name)
    assert stats.split()[0] == name and int(stats.split()[1]) >= 1


def test_pause_unpause(podman, rt, name):
    start_detached(podman, rt, name)
    pm_ok(podman, "pause", name)
    assert inspect(podman, name, "{{.State.Status}}") == "paused"
    pid = int(inspect(podman, name, "{{.State.Pid}}"))
    assert read(cgroup_file(pid, "freezer", "freezer.state")) == "FROZEN"
    pm_ok(podman, "unpause", name)
    assert inspect(podman, name, "{{.State.Status}}") == "running"
    assert read(cgroup_file(pid, "freezer", "freezer.state")) == "THAWED"
    pm_ok(podman, "stop", "-t", "30", name)
    assert inspect(podman, name, "{{.State.ExitCode}}") == "7"


def test_update_resources(podman, rt, name):
    start_detached(podman, rt, name)
    pid = int(inspect(podman, name, "{{.State.Pid}}"))
    pm_ok(podman, "update", "--memory", "64m", "--cpu-shares", "512", name)
    assert read(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == str(64 << 20)
    assert read(cgroup_file(pid, "cpu", "cpu.shares")) == "512"


def test_exec_env_user_workdir(podman, rt, name):
    start_detached(podman, rt, name, "sleep", "1000")
    out = pm_ok(podman, "exec", "-e", "FOO=bar", "-u", "1000", "-w", "/tmp", name,
                "sh", "-c", "echo $FOO; id -u; pwd")
    assert out.split() == ["bar", "1000", "/tmp"]
    r = pm(podman, "exec", name, "sh", "-c", "exit 5")
    assert r.returncode == 5


def test_exec_tty_and_detach(podman, rt, name):
    start_detached(podman, rt, name, "sleep", "1000")
    assert pm_ok(podman, "exec", "-t", name, "tty").startswith("/dev/pts/")
    pm_ok(podman, "exec", "-d", name, "sh", "-c", "echo done > /tmp/detached")
    for _ in range(600):
        if pm(podman, "exec", name, "cat", "/tmp/detached").stdout == "done\n":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the detached exec never wrote its file")


def test_runtime_calls_all_succeed(podman, rt, name, tmp_path):
    """Every call podman and conmon make to the runtime (named so podman finds it in
    runtime_supports_json) exits 0, none with --root; conmon's pass --log-format=json."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / rt
    wrapper.write_text(f'#!/bin/sh\n"{RUNTIMES[rt]}" "$@"\nrc=$?\n'
                       f'echo "$rc $*" >> "{calls}"\nexit $rc\n')
    wrapper.chmod(0o755)
    pm_ok(podman, "run", "--runtime", str(wrapper), "-d", "--name", name, IMG, "sleep", "1000")
    assert pm_ok(podman, "exec", "-t", name, "tty").startswith("/dev/pts/")
    pm_ok(podman, "pause", name)
    pm_ok(podman, "unpause", name)
    pm_ok(podman, "update", "--memory", "64m", name)
    pm_ok(podman, "kill", "--signal", "9", name)
    pm_ok(podman, "wait", name)
    pm_ok(podman, "rm", "--force", name)
    lines = calls.read_text().splitlines()
    assert all(line.startswith("0 ") for line in lines), lines
    verbs, logged = set(), False
    for line in lines:
        argv = line.split()[1:]
        if argv == ["--version"]:
            continue
        assert "--root" not in argv, argv
        logged = logged or "--log-format=json" in argv
        verbs.add(next(a for i, a in enumerate(argv)
                       if not a.startswith("-") and argv[i - 1] not in ("--log", "--root")))
    assert {"create", "start", "pause", "resume", "update", "kill", "delete"} <= verbs, verbs
    assert logged, lines  # conmon's create and exec


# a missing program exits 127, one that cannot be executed 126: podman chooses them from the
# runtime's error text ("no such file or directory", "executable file not found in",
# "permission denied"), as runc words it
NOT_RUNNABLE = [("/nonexistent", 127), ("nonexistent", 127), ("/etc/passwd", 126), ("/etc", 126)]


def test_exit_codes_of_a_program_that_cannot_run(podman, rt, name):
    got = [pm(podman, "run", "--runtime", rt, "--rm", IMG, prog).returncode
           for prog, _ in NOT_RUNNABLE[:3]]
    start_detached(podman, rt, name)
    got += [pm(podman, "exec", name, prog).returncode for prog, _ in NOT_RUNNABLE]
    assert got == [code for _, code in NOT_RUNNABLE[:3] + NOT_RUNNABLE], got
