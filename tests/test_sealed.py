"""runc's CVE-2019-5736 against an interpreter (pyoci/linux/sealed.py): a container process
with CAP_SYS_PTRACE (which sees through non-dumpable processes) and CAP_DAC_OVERRIDE keeps an
fd on /proc/PID/exe of what pyoci runs in its PID namespace (the process of `pyoci exec`
before its execve; the init of a second container that joins the namespace, during
`create`) and reopens it for writing once nothing executes it. It must never get a
writable host file.

pyoci runs here from a COPY of its interpreter (the real one is never at risk), started as
the installed command starts it (INTERPRETER -IS pyoci-script.py: setup.py); the attacker
is tests/support/exe_thief.c, built static."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from support.harness import PYOCI_SCRIPT, REPO, Runtime, kill_and_reap

HERE = os.path.dirname(os.path.abspath(__file__))
THIEF_C = os.path.join(HERE, "support", "exe_thief.c")


@pytest.fixture
def copied_pyoci(tmp_path):
    """pyoci on a copy of the venv's interpreter."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with open(PYOCI_SCRIPT) as f:
        shebang, rest = f.read().split("\n", 1)
    interp = shebang[2:].split()[0]
    copy = tmp_path / "python-copy"
    shutil.copy2(os.path.realpath(interp), copy)
    # the script finds its packages beside its own bin/: PYOCI_SCRIPT's
    packages = f"{os.path.dirname(os.path.dirname(PYOCI_SCRIPT))}/lib"
    os.symlink(packages, tmp_path / "lib")
    os.mkdir(tmp_path / "bin")
    launcher = tmp_path / "bin" / "pyoci"
    launcher.write_text(f"#!{copy} -IS\n{rest}")
    launcher.chmod(0o755)
    root = tmp_path / "state"
    rt = Runtime(str(launcher), str(root))
    rt.copy = str(copy)
    yield rt
    rt.cleanup()


@pytest.fixture
def thief(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc"))
    if not cc:
        pytest.skip("no C compiler")
    out = tmp_path / "exe_thief"
    subprocess.run([cc, "-static", "-O2", "-o", str(out), THIEF_C], check=True)
    return str(out)


def _thief_bundle(bundle_factory, config, thief, args=("/exe_thief", "/tmp/trigger")):
    caps = config["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k] = caps[k] + ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"]
    config["process"]["args"] = list(args)
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    bundle = bundle_factory(config)
    shutil.copy(thief, os.path.join(bundle, "rootfs", "exe_thief"))
    return bundle


def _thief_container(rt, bundle_factory, config, thief, tmp_path, cid):
    bundle = _thief_bundle(bundle_factory, config, thief)
    out = open(tmp_path / "thief.out", "w")
    pidfile = tmp_path / "thief.pid"
    r = rt("run", "-d", "-b", bundle, "--pid-file", str(pidfile), cid, stdout=out,
           stderr=subprocess.STDOUT, reap=False)
    out.close()
    assert r.returncode == 0, (tmp_path / "thief.out").read_text()
    return int(pidfile.read_text())


def _caught(tmp_path) -> bool:
    time.sleep(0.05)                    # the thief's line may lag the command
    return "caught " in (tmp_path / "thief.out").read_text()


def _verdict(rt, cid, pid, tmp_path) -> list[str]:
    """Tell the thief to try its fds; its report."""
    assert rt("exec", cid, "touch", "/tmp/trigger").returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = (tmp_path / "thief.out").read_text().splitlines()
        if "done" in lines:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"the thief did not finish: {lines}")


def _check(lines: list[str], copy: str) -> None:
    caught = [ln for ln in lines if ln.startswith("caught ")]
    assert caught, f"the thief caught no process (nothing was tested): {lines}"
    assert not [ln for ln in lines if ln.startswith("WRITABLE")], \
        f"a host executable was writable from the container: {lines}"
    refused = [ln for ln in lines if ln.startswith("refused ")]
    assert len(refused) == len(caught), lines
    with open(copy, "rb") as f:           # and nothing happened to it
        assert f.read(4) == b"\x7fELF"


def test_exec_process_exe_is_not_writable(copied_pyoci, bundle_factory, config, thief,
                                          tmp_path):
    """The process of `pyoci exec` runs (before its execve) from a read-only view of the
    interpreter: the thief's fd on it cannot be reopened for writing (EROFS)."""
    rt = copied_pyoci
    pid = _thief_container(rt, bundle_factory, config, thief, tmp_path, "thief")
    try:
        for _ in range(20):            # until the thief has caught one (a race it wins
            r = rt("exec", "thief", "true")  # nearly always at once)
            assert r.returncode == 0, r.stderr
            if _caught(tmp_path):
                break
        lines = _verdict(rt, "thief", pid, tmp_path)
    finally:
        rt("delete", "--force", "thief")
        kill_and_reap(pid)
    _check(lines, rt.copy)
    assert any("Read-only file system" in ln for ln in lines), lines


def test_init_joining_the_pid_namespace_is_not_writable(copied_pyoci, bundle_factory, config,
                                                        thief, tmp_path):
    """A second container created into the thief's PID namespace: its init (Python until it
    executes the waiter or the program) is not a writable host file either."""
    import copy

    rt = copied_pyoci
    victim_cfg = copy.deepcopy(config)
    pid = _thief_container(rt, bundle_factory, config, thief, tmp_path, "thief2")
    try:
        for n in victim_cfg["linux"]["namespaces"]:
            if n["type"] == "pid":
                n["path"] = f"/proc/{pid}/ns/pid"
        victim_cfg["process"]["args"] = ["true"]
        b = bundle_factory(victim_cfg)
        for _ in range(10):
            r = rt("create", "-b", b, "victim")
            assert r.returncode == 0, r.stderr
            rt("delete", "--force", "victim")
            if _caught(tmp_path):
                break
        lines = _verdict(rt, "thief2", pid, tmp_path)
    finally:
        rt("delete", "--force", "victim")
        rt("delete", "--force", "thief2")
        kill_and_reap(pid)
    _check(lines, rt.copy)


def test_python_init_waiting_for_start_is_not_writable(copied_pyoci, bundle_factory, config,
                                                       thief, tmp_path):
    """Without the waiter (PYOCI_WAITER="": not built, or hooks/AppArmor need the Python
    init) the created container's init waits in Python: a process `exec`'d into the created
    container sees it as PID 1, and must not find a writable host file either."""
    rt = copied_pyoci
    bundle = _thief_bundle(bundle_factory, config, thief, args=("sleep", "100"))
    env = {**os.environ, "PYOCI_WAITER": ""}
    pidfile = tmp_path / "init.pid"
    r = rt("create", "-b", bundle, "--pid-file", str(pidfile), "waits", env=env, reap=False)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        assert "python" in os.readlink(f"/proc/{pid}/exe") or \
            os.readlink(f"/proc/{pid}/exe") == "/"
        with open(tmp_path / "thief.out", "w") as out:
            r = rt("exec", "-d", "waits", "/exe_thief", "/tmp/trigger", stdout=out,
                   stderr=subprocess.STDOUT)
        assert r.returncode == 0, (tmp_path / "thief.out").read_text()
        deadline = time.monotonic() + 10       # it has an fd on PID 1's executable...
        while "caught 1 " not in (tmp_path / "thief.out").read_text():
            assert time.monotonic() < deadline, (tmp_path / "thief.out").read_text()
            time.sleep(0.02)
        assert rt("start", "waits").returncode == 0     # ...which nothing executes now
        lines = _verdict(rt, "waits", pid, tmp_path)
    finally:
        rt("delete", "--force", "waits")
        kill_and_reap(pid)
    _check(lines, rt.copy)


REEXEC = """
import os, sys
sys.path.insert(0, {repo!r})
from pyoci import launcher
launcher.launched = True
from pyoci.linux import sealed
if sealed.is_sealed():
    print(os.readlink("/proc/self/exe"), flush=True)
    sys.stdin.read()
    sys.exit(0)
if {mode!r} == "memfd":     # as where no mount can be made
    def no_view(fds, exe):
        raise OSError(1, "no mount here")
    sealed._view = no_view
sealed.reexec()
"""


@pytest.mark.parametrize("mode, link, errno_", [("view", "/python-copy", 30),
                                                ("memfd", "/memfd:pyoci-python (deleted)", 1)])
def test_reexec_gives_a_file_nobody_can_write(copied_pyoci, mode, link, errno_):
    """Both ways pyoci.linux.sealed runs the command again: a detached read-only bind mount
    (EROFS), or where that cannot be made a sealed memfd copy (EPERM). An fd on
    /proc/PID/exe kept by root (CAP_DAC_OVERRIDE, as the thief) cannot write through it
    once the process is gone."""
    import errno as errno_mod

    p = subprocess.Popen([copied_pyoci.copy, "-IS", "-c",
                          REEXEC.format(repo=REPO, mode=mode)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == link
        fd = os.open(f"/proc/{p.pid}/exe", os.O_PATH)
    finally:
        p.stdin.close()
        p.wait()
    try:
        with pytest.raises(OSError) as e:
            w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
            try:
                os.pwrite(w, b"x", os.fstat(w).st_size)
            finally:
                os.close(w)
        assert e.value.errno == errno_, errno_mod.errorcode[e.value.errno]
    finally:
        os.close(fd)
    with open(copied_pyoci.copy, "rb") as f:
        assert f.read(4) == b"\x7fELF"
