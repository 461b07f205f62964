"""The waiter (pyoci/linux/waiter.c): a created container's init executes it from a sealed
memfd and it is what waits for `start`; the program it then executes gets what it would get
from the Python init (compared with runc), and where the waiter cannot be used (hooks after
start, a seccomp listener or a filter that would stop it, AppArmor, no binary) the Python
init waits as before."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess

import pytest

from pyoci.linux import waiter
from support.harness import REPO, kill_and_reap

MEMFD_EXE = "/memfd:pyoci-waiter (deleted)"
SUPPORTED = os.uname().machine in ("x86_64", "aarch64")
BUILT = os.access(waiter.DEFAULT_PATH, os.X_OK)
needs_waiter = pytest.mark.skipif(not BUILT, reason="pyoci-waiter is not built here")

# What the program reports about itself: compared between runtimes and between the waiter
# and the Python init.
REPORT = ("echo \"args=$0|$*|$#\"; echo cwd=$(pwd); echo id=$(id -u):$(id -g):$(id -G); umask; "
          "env | sort; grep -E '^(Cap|NoNewPrivs|Seccomp:|Cpus_allowed_list)' "
          "/proc/self/status; ls /proc/self/fd | sort -n | tr '\\n' ' '; echo")


# --- helpers ------------------------------------------------------------------------------

def status_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def kib(value: str) -> int:
    return int(value.split()[0])


class Created:
    """A container created with stdout/stderr in files; the test process (a subreaper) is
    its init's parent, so its exit status can be waited for."""

    def __init__(self, rt, bundle: str, cid: str, tmp_path, env: dict | None = None):
        self.rt, self.cid = rt, cid
        self.out_path = tmp_path / f"{rt.name}-{cid}.out"
        self.err_path = tmp_path / f"{rt.name}-{cid}.err"
        pidfile = tmp_path / f"{rt.name}-{cid}.pid"
        kw = {"env": env} if env is not None else {}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            r = rt("create", "-b", bundle, "--pid-file", str(pidfile), cid, stdout=out,
                   stderr=err, reap=False, **kw)
        assert r.returncode == 0, self.err_path.read_text()
        self.pid = int(pidfile.read_text())

    def exe(self) -> str:
        return os.readlink(f"/proc/{self.pid}/exe")

    def start_and_wait(self) -> int:
        r = self.rt("start", self.cid, reap=False)
        assert r.returncode == 0, r.stderr
        _, st = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(st)

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def delete(self) -> None:
        self.rt("delete", "--force", self.cid)
        kill_and_reap(self.pid)


def without_waiter(value: str = "") -> dict:
    return {**os.environ, waiter.ENV: value}


def report_config(config, **proc):
    config["process"]["args"] = ["sh", "-c", REPORT, "a b", "c"]
    config["process"]["env"] = ["PATH=/bin:/usr/bin", "FOO=bar baz"]
    config["process"]["cwd"] = "/tmp"
    config["process"].update(proc)
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    return config


# --- the binary and the decision ------------------------------------------------------------

def test_waiter_is_built_where_it_can_be():
    """setup.sh builds it on x86_64/aarch64 with a C compiler: there it must be there, or
    every created container silently keeps a Python init."""
    if not SUPPORTED or not (shutil.which(os.environ.get("CC", "cc"))):
        pytest.skip("no C compiler or an architecture the waiter does not support")
    assert BUILT, f"{waiter.DEFAULT_PATH} missing: run scripts/setup.sh"
    with open(waiter.DEFAULT_PATH, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert "/pyoci/linux/pyoci-waiter" in open(os.path.join(REPO, ".gitignore")).read()


def test_uses_the_waiter_unless_something_needs_the_python_init(config):
    assert waiter.uses(config)
    cases = {
        "startContainer": lambda c: c.setdefault("hooks", {}).update(
            startContainer=[{"path": "/bin/true"}]),
        "apparmor": lambda c: c["process"].update(apparmorProfile="p"),
        "selinux": lambda c: c["process"].update(selinuxLabel="l"),
        "listener": lambda c: c["linux"].update(seccomp={
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}),
        "notify": lambda c: c["linux"].update(seccomp={
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    }
    for name, change in cases.items():
        c = copy.deepcopy(config)
        change(c)
        assert not waiter.uses(c), name
    c = copy.deepcopy(config)
    c["hooks"] = {"createContainer": [{"path": "/bin/true"}], "poststart": [{"path": "/x"}]}
    assert waiter.uses(c)                                   # before/after: the runtime's


@pytest.mark.parametrize("nnp,seccomp,ok", [
    # with NNP the waiter loads the filter itself, right before the program's execve
    (True, {"defaultAction": "SCMP_ACT_ERRNO"}, True),
    (False, {"defaultAction": "SCMP_ACT_ALLOW"}, True),
    (False, {"defaultAction": "SCMP_ACT_LOG",
             "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, True),
    (False, {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["openat", "mkdir"], "action": "SCMP_ACT_ERRNO"}]}, False),
    (False, {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["prctl"], "action": "SCMP_ACT_KILL",
                           "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, False),
    (False, {"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{"names": list(waiter.SYSCALLS), "action": "SCMP_ACT_ALLOW"}]},
     True),
    (False, {"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{"names": list(waiter.SYSCALLS[1:]), "action": "SCMP_ACT_ALLOW"}]},
     False),
    (False, {"defaultAction": "SCMP_ACT_ERRNO",      # allowed only for some arguments
             "syscalls": [{"names": list(waiter.SYSCALLS), "action": "SCMP_ACT_ALLOW",
                           "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, False),
])
def test_seccomp_without_nnp_needs_a_filter_that_lets_the_waiter_run(config, nnp, seccomp, ok):
    config["process"]["noNewPrivileges"] = nnp
    config["linux"]["seccomp"] = seccomp
    assert waiter.uses(config) is ok


@needs_waiter
def test_binary_dies_of_a_signal_pending_since_before_its_execve(tmp_path):
    """The Python init blocks the terminating signals before "ready"; one sent meanwhile
    survives the execve and ends the waiter (128+signo) once its handlers are in."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_PATH)

    def pending_term():
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        p = subprocess.run([waiter.DEFAULT_PATH, str(fd), "-", "-", "0", "/bin/true", "true"],
                           pass_fds=[fd], preexec_fn=pending_term, timeout=30,
                           stderr=subprocess.PIPE)
    finally:
        os.close(fd)
    assert p.returncode == 128 + signal.SIGTERM, p.stderr


@needs_waiter
def test_binary_reports_one_line_and_exits_1(tmp_path):
    p = subprocess.run([waiter.DEFAULT_PATH, "99", "-", "-", "0", "/bin/true", "true"],
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr == b"pyoci: /proc/self/fd/99: No such file or directory\n"


# --- real containers ----------------------------------------------------------------------

@needs_waiter
def test_the_waiter_is_what_waits(pyoci, bundle_factory, config, tmp_path):
    b = bundle_factory(report_config(config))
    c = Created(pyoci, b, "w1", tmp_path)
    try:
        assert c.exe() == MEMFD_EXE
        st = status_of(c.pid)
        assert st["Name"] == "pyoci-waiter"
        assert st["NoNewPrivs"] == "1" and st["SigBlk"] == "0" * 16
        # stdio and the fifo (O_PATH) only: no memfd, no socket, nothing of the host
        fds = sorted(int(n) for n in os.listdir(f"/proc/{c.pid}/fd"))
        assert fds[:3] == [0, 1, 2] and len(fds) == 4, fds
        assert os.readlink(f"/proc/{c.pid}/fd/{fds[3]}").endswith("/w1/exec.fifo")
        assert pyoci.state("w1")["status"] == "created"
        assert c.start_and_wait() == 0
    finally:
        c.delete()
    assert "args=a b|c|1" in c.out() and "cwd=/tmp" in c.out() and "FOO=bar baz" in c.out()
    assert c.err() == ""


@needs_waiter
def test_waiting_init_peak_rss_is_far_below_the_python_init(pyoci, bundle_factory, config,
                                                           tmp_path):
    b = bundle_factory(report_config(config))
    w = Created(pyoci, b, "w1", tmp_path)
    p = Created(pyoci, b, "p1", tmp_path, env=without_waiter())
    try:
        assert w.exe() == MEMFD_EXE and p.exe() != MEMFD_EXE
        hwm_w, hwm_p = kib(status_of(w.pid)["VmHWM"]), kib(status_of(p.pid)["VmHWM"])
    finally:
        w.delete()
        p.delete()
    # structural: a static program without libc against an interpreter (~10 MB)
    assert hwm_w * 10 < hwm_p, (hwm_w, hwm_p)


@needs_waiter
def test_waiting_init_peak_rss_is_below_runc(pyoci, runc, bundle_factory, config, tmp_path):
    b = bundle_factory(report_config(config))
    hwm = {}
    for rt in (pyoci, runc):
        c = Created(rt, b, "r1", tmp_path)
        try:
            hwm[rt.name] = kib(status_of(c.pid)["VmHWM"])
        finally:
            c.delete()
    assert hwm["pyoci"] < hwm["runc"], hwm


CAPS = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]


@needs_waiter
@pytest.mark.parametrize("user,caps", [
    ("root", None),                                                      # the default config
    ("root", {"bounding": CAPS, "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
              "inheritable": ["CAP_NET_RAW"]}),                          # P grows at execve
    ("1000", {k: CAPS[:2] for k in ("bounding", "effective", "permitted", "inheritable",
                                    "ambient")}),                        # ambient
    ("1000", {"bounding": CAPS, "effective": CAPS, "permitted": CAPS}),  # lost at execve
])
def test_program_gets_what_runc_gives_it(pyoci, runc, bundle_factory, config, tmp_path,
                                         user, caps):
    """Two execve (waiter, program) instead of one: the same credentials, capabilities,
    arguments, environment, cwd, umask, NNP and fds as runc's single one."""
    extra = {"user": {"uid": 1000, "gid": 1000, "additionalGids": [29, 100], "umask": 0o027}}
    report_config(config, **(extra if user != "root" else {}))
    if caps is not None:
        config["process"]["capabilities"] = caps
    b = bundle_factory(config)
    outs = {}
    for rt in (pyoci, runc):
        c = Created(rt, b, "cap", tmp_path)
        try:
            if rt is pyoci:
                assert c.exe() == MEMFD_EXE
            assert c.start_and_wait() == 0, c.err()
        finally:
            c.delete()
        outs[rt.name] = c.out()
    assert "CapEff" in outs["pyoci"] and "FOO=bar baz" in outs["pyoci"]
    assert outs["pyoci"] == outs["runc"]


@needs_waiter
def test_kill_term_ends_a_created_container(pyoci, bundle_factory, config, tmp_path):
    b = bundle_factory(report_config(config))
    for cid, env in (("t1", None), ("t2", without_waiter())):
        c = Created(pyoci, b, cid, tmp_path, env=env)
        try:
            assert (c.exe() == MEMFD_EXE) is (env is None)
            pyoci("kill", cid, "TERM", check=True, reap=False)
            _, st = os.waitpid(c.pid, 0)
            assert os.waitstatus_to_exitcode(st) == 128 + signal.SIGTERM
            assert pyoci.state(cid)["status"] == "stopped"
        finally:
            c.delete()
        assert c.out() == ""                                 # the program never ran


@needs_waiter
@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_is_enforced(pyoci, bundle_factory, config, tmp_path, nnp):
    """With NNP the waiter loads the filter after `start`; without, the init loaded it as
    its last act before executing the waiter, which runs under it (the filter allows it)."""
    config["process"]["noNewPrivileges"] = nnp
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}]}
    config["process"]["args"] = ["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?; "
                                 "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    c = Created(pyoci, bundle_factory(config), "s1", tmp_path)
    try:
        assert c.exe() == MEMFD_EXE
        assert status_of(c.pid)["Seccomp"] == ("0" if nnp else "2")
        assert c.start_and_wait() == 0, c.err()
    finally:
        c.delete()
    out = c.out()
    assert "Permission denied" in out and "rc=1" in out
    assert "Seccomp:\t2" in out and f"NoNewPrivs:\t{int(nnp)}" in out


def _all_syscalls_but(*denied: str) -> list[str]:
    from pyoci.linux import seccomp

    lib = seccomp.libseccomp()
    names = set()
    for nr in range(1024):
        try:
            names.add(os.fsdecode(lib.resolve_syscall(0, nr)))
        except Exception:  # noqa: BLE001 - no syscall with that number
            pass
    return sorted(names - set(denied))


@needs_waiter
@pytest.mark.parametrize("deny,uses_waiter", [("mkdir", True), ("sched_setaffinity", False)])
def test_default_deny_filter_without_nnp(pyoci, bundle_factory, config, tmp_path, deny,
                                         uses_waiter):
    """Docker's case: an allow-list under a denying default, no NNP. The waiter waits when
    the list lets it run, the Python init otherwise; the filter holds either way."""
    config["process"]["noNewPrivileges"] = False
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": _all_syscalls_but("mkdir", "mkdirat", deny),
                      "action": "SCMP_ACT_ALLOW"}]}
    config["process"]["args"] = ["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    c = Created(pyoci, bundle_factory(config), "d1", tmp_path)
    try:
        assert (c.exe() == MEMFD_EXE) is uses_waiter
        assert c.start_and_wait() == 0, c.err()
    finally:
        c.delete()
    assert "Operation not permitted" in c.out() and "rc=1" in c.out()


@needs_waiter
def test_final_cpu_affinity(pyoci, bundle_factory, config, tmp_path):
    config["process"]["execCPUAffinity"] = {"final": "0"}
    config["process"]["args"] = ["grep", "Cpus_allowed_list", "/proc/self/status"]
    c = Created(pyoci, bundle_factory(config), "a1", tmp_path)
    try:
        assert c.exe() == MEMFD_EXE
        assert c.start_and_wait() == 0, c.err()
    finally:
        c.delete()
    assert c.out().split() == ["Cpus_allowed_list:", "0"]


@needs_waiter
def test_start_container_hooks_use_the_python_init(pyoci, bundle_factory, config, tmp_path):
    hookdir = tmp_path / "hooks"
    hookdir.mkdir()
    log = hookdir / "log"
    config["hooks"] = {"startContainer": [{"path": "/bin/sh",
                                           "args": ["sh", "-c", f"echo started >> {log}"]}]}
    config["mounts"].append({"destination": str(hookdir), "type": "bind",
                             "source": str(hookdir), "options": ["rbind", "rw"]})
    config["process"]["args"] = ["echo", "program"]
    c = Created(pyoci, bundle_factory(config), "h1", tmp_path)
    try:
        assert c.exe() != MEMFD_EXE
        assert c.start_and_wait() == 0, c.err()
    finally:
        c.delete()
    assert log.read_text() == "started\n" and c.out() == "program\n"


@needs_waiter
def test_proc1_exe_is_the_sealed_waiter_not_the_host_python(pyoci, bundle_factory, config,
                                                            tmp_path):
    """runc's CVE-2019-5736: a process of the container opens /proc/1/exe for writing. Even
    with CAP_SYS_PTRACE (to see through the non-dumpable init) and CAP_DAC_OVERRIDE it
    finds a sealed memfd being executed, not a host binary."""
    caps = config["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k] = caps[k] + ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"]
    config["process"]["args"] = ["sleep", "100"]
    c = Created(pyoci, bundle_factory(config), "x1", tmp_path)
    try:
        r = pyoci("exec", "x1", "sh", "-c", "readlink /proc/1/exe; "
                  "(echo x >> /proc/1/exe) 2>/dev/null && echo writable || echo refused",
                  reap=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [MEMFD_EXE, "refused"]
    finally:
        c.delete()


@needs_waiter
@pytest.mark.parametrize("how", ["missing", "disabled", "not-executable"])
def test_python_init_waits_without_the_waiter(pyoci, bundle_factory, config, tmp_path, how):
    """No binary (not built, another architecture), PYOCI_WAITER="" or a binary whose
    execve fails: the Python init waits, and the program gets the same."""
    fake = tmp_path / "fake-waiter"
    fake.write_bytes(b"\x7fELF" + b"\0" * 60)                # execve: Exec format error
    value = {"missing": str(tmp_path / "none"), "disabled": "",
             "not-executable": str(fake)}[how]
    b = bundle_factory(report_config(config))
    outs = {}
    for name, env in (("python", without_waiter(value)), ("waiter", None)):
        c = Created(pyoci, b, f"f-{name}", tmp_path, env=env)
        try:
            assert (c.exe() == MEMFD_EXE) is (name == "waiter")
            if name == "python":
                assert "python" in os.path.basename(c.exe())
            assert c.start_and_wait() == 0, c.err()
        finally:
            c.delete()
        outs[name] = c.out()
    assert "FOO=bar baz" in outs["python"]
    assert outs["python"] == outs["waiter"]


@needs_waiter
def test_error_after_start_is_one_line_and_exit_1(pyoci, bundle_factory, config, tmp_path):
    """The program resolved at create is gone at start: the waiter says so on the
    container's stderr, as one line, and exits 1."""
    config["process"]["args"] = ["/tool", "true"]
    b = bundle_factory(config)
    tool = os.path.join(b, "rootfs", "tool")
    shutil.copy2(os.path.join(b, "rootfs", "bin", "busybox"), tool)
    c = Created(pyoci, b, "e1", tmp_path)
    try:
        assert c.exe() == MEMFD_EXE
        os.unlink(tool)
        code = c.start_and_wait()
    finally:
        c.delete()
    assert code == 1
    assert c.err() == "pyoci: /tool: No such file or directory\n"
