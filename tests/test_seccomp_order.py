"""The container's seccomp filter is the last thing pyoci does before the program's execve:
whatever the filter refuses, pyoci's own setup is not subject to it (with and without
no_new_privs, with and without a user change, for create+start, run and exec, through the
waiter and the Python init), so the container runs whenever runc runs it, and more often.

The allowlists are deliberately hostile: "minimal" allows only what the static busybox
needs to start, print and sleep (no close_range, getcwd, prctl, capset, setgroups, openat,
close, rt_sigaction, sendto...); "denylist" allows everything but pyoci's and runc's setup
calls; "waiter" is "minimal" plus what the waiter (pyoci/linux/waiter.c) calls, so a
container without no_new_privs goes through the waiter under the filter; "close_range"
refuses only that (runtime-tools' default profile lacks it), which runc runs.

runc 1.1.5 fails every hostile one (it closes its log pipe after loading the filter even
with no_new_privs, and without runs setgroups, capset, prctl, getcwd... under it)."""

from __future__ import annotations

import os
import subprocess

import pytest

from pyoci.linux import waiter

BUSYBOX_START = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
                 "prlimit64", "readlink", "getrandom", "mprotect", "getuid", "write",
                 "exit_group", "exit", "clock_nanosleep", "nanosleep"]
SETUP_CALLS = ["close_range", "getcwd", "prctl", "capset", "capget", "setgroups", "setuid",
               "setgid", "setresuid", "setresgid", "chdir", "fchown", "openat", "close",
               "rt_sigaction", "rt_sigprocmask", "sched_setaffinity", "sendto", "sendmsg",
               "umask", "newfstatat", "access", "faccessat2", "fcntl", "getdents64"]
PROFILES = {
    "minimal": {"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": BUSYBOX_START, "action": "SCMP_ACT_ALLOW"}]},
    "denylist": {"defaultAction": "SCMP_ACT_ALLOW",
                 "syscalls": [{"names": SETUP_CALLS, "action": "SCMP_ACT_ERRNO"}]},
    "close_range": {"defaultAction": "SCMP_ACT_ALLOW",       # runtime-tools' case: runc runs it
                    "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]},
    "waiter": {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": sorted(set(BUSYBOX_START) | set(waiter.SYSCALLS)),
                             "action": "SCMP_ACT_ALLOW"}]},
}
USERS = {"root": {"uid": 0, "gid": 0},
         "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 100]}}
MESSAGE = "seccomp-ok"


def _config(config, profile: str, nnp: bool, user: str, args: list[str]) -> dict:
    config["process"]["args"] = args
    config["process"]["noNewPrivileges"] = nnp
    config["process"]["user"] = dict(USERS[user])
    config["linux"]["seccomp"] = PROFILES[profile]
    return config


def _env(python_init: bool) -> dict | None:
    return {**os.environ, waiter.ENV: ""} if python_init else None


def _run(rt, bundle: str, cid: str, tmp_path, env) -> tuple[bool, str]:
    out = tmp_path / f"{rt.name}-{cid}.out"
    with open(out, "w") as f:
        r = rt("run", "-b", bundle, cid, stdout=f, env=env)
    rt("delete", "--force", cid)
    text = out.read_text()
    return r.returncode == 0 and MESSAGE in text, f"{r.returncode} {text!r} {r.stderr!r}"


def _create_start(rt, bundle: str, cid: str, tmp_path, env) -> tuple[bool, str]:
    out, pidfile = tmp_path / f"{rt.name}-{cid}.out", tmp_path / f"{rt.name}-{cid}.pid"
    with open(out, "w") as f:
        r = rt("create", "-b", bundle, "--pid-file", str(pidfile), cid, stdout=f, reap=False,
               env=env)
    if r.returncode != 0:
        rt("delete", "--force", cid)
        return False, f"create: {r.stderr!r}"
    pid = int(pidfile.read_text())
    s = rt("start", cid, reap=False)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    rt("delete", "--force", cid)
    text = out.read_text()
    return (s.returncode == 0 and status == 0 and MESSAGE in text,
            f"start {s.returncode} {s.stderr!r}, exit {status}, {text!r}")


def _exec(rt, bundle: str, cid: str, tmp_path, env) -> tuple[bool, str]:
    """The container sleeps under the filter; exec runs the echo under it too."""
    r = rt("run", "-d", "-b", bundle, cid, stdout=subprocess.DEVNULL, env=env)
    try:
        if r.returncode != 0:
            return False, f"run -d: {r.stderr!r}"
        e = rt("exec", cid, "/bin/busybox", "echo", MESSAGE)
        return e.returncode == 0 and MESSAGE in e.stdout, f"exec {e.returncode} {e.stderr!r}"
    finally:
        rt("delete", "--force", cid)


MODES = {"create-start": (_create_start, ["/bin/busybox", "echo", MESSAGE]),
         "run": (_run, ["/bin/busybox", "echo", MESSAGE]),
         "exec": (_exec, ["/bin/busybox", "sleep", "30"])}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("user", sorted(USERS))
@pytest.mark.parametrize("nnp", [False, True], ids=["privs", "nnp"])
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_hostile_filter_runs_whenever_runc_does(pyoci, runc, bundle_factory, config, tmp_path,
                                                profile, nnp, user, mode):
    fn, args = MODES[mode]
    b = bundle_factory(_config(config, profile, nnp, user, args))
    runc_ok, runc_why = fn(runc, b, "s1", tmp_path, None)
    for python_init in (False, True):
        ok, why = fn(pyoci, b, f"s{int(python_init)}", tmp_path, _env(python_init))
        # pyoci runs them all (its setup is never under the filter), so whenever runc does
        assert ok, (f"pyoci ({'Python init' if python_init else 'waiter'}): {why}; "
                    f"runc: {runc_ok} {runc_why}")
    if profile == "close_range":
        assert runc_ok, runc_why          # the comparison point: runc runs this one


def test_minimal_filter_without_nnp_fails_runc_but_not_pyoci(pyoci, runc, bundle_factory,
                                                             config, tmp_path):
    """The case that makes the difference: runc loads the filter before finalizeNamespace
    (setgroups, setuid, capset, prctl...), so it cannot run it; pyoci can."""
    b = bundle_factory(_config(config, "minimal", False, "user", MODES["run"][1]))
    assert not _run(runc, b, "r1", tmp_path, None)[0]
    ok, why = _run(pyoci, b, "p1", tmp_path, None)
    assert ok, why


@pytest.mark.parametrize("python_init", [False, True], ids=["waiter", "python-init"])
def test_load_error_fails_create(pyoci, bundle_factory, config, python_init):
    """Without no_new_privs the filter is loaded after "ready" (waiter) or after `start`
    (Python init): a load failure is still create's error, as with runc, one line, and
    nothing is left behind. (A program of more than BPF_MAXINSNS instructions: the kernel
    refuses it with EINVAL.)"""
    cfg = _config(config, "waiter", False, "root", ["/bin/busybox", "true"])
    cfg["linux"]["seccomp"]["syscalls"] += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": i, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]} for i in range(1000)]
    assert waiter.uses(cfg)
    b = bundle_factory(cfg)
    r = pyoci("create", "-b", b, "e1", env=_env(python_init))
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("pyoci: ") and "linux.seccomp" in r.stderr, r.stderr
    assert "Invalid argument" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert pyoci("state", "e1").returncode != 0
