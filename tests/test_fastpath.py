"""pyoci.fastpath (state/start/kill/delete on built-in modules) against the full
implementation (pyoci.cli): same outputs, same effects, and the full path for anything else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from pyoci import container, fastpath
from support.harness import REPO, reap_zombies

VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
PY = VENV_PY if os.path.exists(VENV_PY) else sys.executable

# Runs fastpath.main(args) in a fresh isolated interpreter, as the launcher does, and says on
# stderr's last line whether it had to hand the command to pyoci.cli.
_PROBE = ("import sys; sys.path.insert(0, {repo!r}); from pyoci import fastpath; "
          "rc = fastpath.main({args!r}); sys.stdout.flush(); "
          "print('path=' + ('full' if 'pyoci.cli' in sys.modules else 'fast'), "
          "file=sys.stderr); sys.exit(rc)")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(argv, p.returncode, out.read().decode(),
                                        err.read().decode())
    reap_zombies()
    return r


def fast(root: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """(result, "fast" or "full") of the launcher's entry point."""
    r = _run([PY, "-IS", "-c", _PROBE.format(repo=REPO, args=["--root", root, *args])])
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith("path="), r.stderr
    r.stderr = "\n".join(lines[:-1]) + ("\n" if lines[:-1] else "")
    return r, lines[-1][5:]


def full(root: str, *args: str) -> subprocess.CompletedProcess:
    """The same command through pyoci.cli (python -m pyoci)."""
    return _run([PY, "-m", "pyoci", "--root", root, *args])


# --- units ----------------------------------------------------------------------------------

@pytest.mark.parametrize("obj", [
    {}, [], {"a": 1}, {"ociVersion": "1.3.0", "id": "x", "pid": 0, "status": "stopped",
                       "annotations": {"k": "v", "ü": "é\n\"\\", "e": ""}},
    {"n": [1, -2, True, False, None, "s", {"x": []}, []], "d": {"y": {}}},
])
def test_dumps_is_json_dumps_indent_2(obj):
    assert fastpath._dumps(obj) == json.dumps(obj, indent=2)


@pytest.mark.parametrize("text", [None, "", "KILL", "kill", "SIGKILL", "9", "15", "1",
                                  "SIGUSR1", "hup", "TERM", "SIGIOT", "CHLD"])
def test_signal_number_is_parse_signal(text):
    assert fastpath._signal_number(text) == container.parse_signal(text)


@pytest.mark.parametrize("text", ["RTMIN", "SIGRTMIN+2", "RTMAX-1", "SIGFOO", "0", "999",
                                  "-1", "_DFL", "SIG_IGN"])
def test_signal_number_leaves_the_rest_to_the_full_path(text):
    with pytest.raises(fastpath._Fallback):
        fastpath._signal_number(text)


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["-h"], ["state"], ["--root"], ["--nope", "state", "x"],
    ["list"], ["kill", "--all", "x"], ["state", "--", "x"], ["--debug=true", "state", "x"],
])
def test_other_command_lines_fall_back(argv):
    with pytest.raises(fastpath._Fallback):
        fastpath._fast(argv)


def test_parse_takes_both_flag_forms():
    g, cmd, o, pos = fastpath._parse(["-root", "/r", "--log=/l", "--log-format", "json",
                                      "--debug", "--systemd-cgroup", "delete", "-f", "x"])
    assert g == {"root": "/r", "log": "/l", "log_format": "json", "debug": True,
                 "systemd-cgroup": True}
    assert (cmd, o, pos) == ("delete", {"force": True}, ["x"])


# --- real containers ------------------------------------------------------------------------


def _wait_stopped(root: str, cid: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r, _ = fast(root, "state", cid)
        s = json.loads(r.stdout)["status"]
        if s == "stopped" or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


@pytest.mark.integration
def test_lifecycle_fast_and_full_agree(pyoci, bundle_factory, config, tmp_path):
    config["process"]["args"] = ["sleep", "100"]
    config["annotations"] = {"org.example/ü": "x\ty"}
    b = bundle_factory(config)
    root = pyoci.root
    pyoci("create", "--bundle", b, "c1", check=True)
    log = str(tmp_path / "log")

    for status in ("created", "running", "stopped"):
        r, path = fast(root, "--log", log, "state", "c1")
        assert (r.returncode, path) == (0, "fast"), r.stderr
        assert r.stdout == full(root, "state", "c1").stdout
        assert json.loads(r.stdout)["status"] == status
        if status == "created":
            r, path = fast(root, "start", "c1")
            assert (r.returncode, path, r.stderr) == (0, "fast", "")
        elif status == "running":
            r, path = fast(root, "kill", "c1", "KILL")
            assert (r.returncode, path, r.stderr) == (0, "fast", "")
            assert _wait_stopped(root, "c1") == "stopped"
    assert os.path.exists(log)

    # errors are the full path's, message and exit code
    for args in (["kill", "c1"], ["start", "c1"], ["state", "nope"], ["delete", "nope"]):
        r, path = fast(root, *args)
        want = full(root, *args)
        assert (path, r.returncode, r.stderr) == ("full", want.returncode, want.stderr)

    with open(os.path.join(root, "c1", "state.json")) as f:
        cgroup = json.load(f).get("cgroup") or {}
    made = [d for d in cgroup.get("created", []) if os.path.isdir(d)]
    assert made, cgroup
    r, path = fast(root, "delete", "c1")
    assert (r.returncode, path, r.stderr) == (0, "fast", "")
    assert not os.path.exists(os.path.join(root, "c1"))
    assert [d for d in made if os.path.isdir(d)] == []


@pytest.mark.integration
def test_delete_of_a_created_container_is_the_full_paths(pyoci, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    pyoci("create", "--bundle", b, "c2", check=True)
    r, path = fast(pyoci.root, "delete", "c2")
    assert path == "full" and r.returncode == 1 and "created" in r.stderr
    r, path = fast(pyoci.root, "delete", "--force", "c2")
    assert (r.returncode, path) == (0, "full"), r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "c2"))


@pytest.mark.integration
def test_poststart_hooks_run_through_the_full_path(pyoci, bundle_factory, config, tmp_path):
    mark = tmp_path / "poststart"
    config["process"]["args"] = ["sleep", "100"]
    config["hooks"] = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c",
                                                                  f"echo ran > {mark}"]}]}
    b = bundle_factory(config)
    pyoci("create", "--bundle", b, "c3", check=True)
    r, path = fast(pyoci.root, "start", "c3")
    assert (r.returncode, path) == (0, "full"), r.stderr
    assert mark.read_text() == "ran\n"
    pid = json.loads(fast(pyoci.root, "state", "c3")[0].stdout)["pid"]
    os.kill(pid, signal.SIGKILL)


# --- pause, resume --------------------------------------------------------------------------

def _freezer_files(root: str, cid: str) -> dict:
    """The container's freezer files as the kernel shows them (v1 freezer or cgroup2)."""
    with open(os.path.join(root, cid, "state.json")) as f:
        cg = json.load(f)["cgroup"]
    if cg["driver"] == "v1":
        d, names = cg["paths"]["freezer"], ("freezer.state", "freezer.self_freezing")
    else:
        d, names = cg["path"], ("cgroup.freeze", "cgroup.events")
    out = {}
    for n in names:
        with open(os.path.join(d, n)) as f:
            out[n] = [ln for ln in f.read().split("\n") if not ln.startswith("populated")]
    return out


@pytest.mark.integration
def test_pause_resume_fast_and_full_agree(pyoci, bundle_factory, config):
    """The same steps on two containers, one through the fast path and one through
    pyoci.cli: same results, same cgroup files, and the full path's errors."""
    config["process"]["args"] = ["sleep", "100"]
    root = pyoci.root
    for cid in ("fast", "full"):
        pyoci("create", "--bundle", bundle_factory(config), cid, check=True)
    for status in ("created", "running", "stopped"):
        for cmd in ("pause", "resume"):
            r, path = fast(root, cmd, "fast")
            want = full(root, cmd, "full")
            if status == "stopped":
                assert (path, r.returncode, r.stderr) == ("full", 1, want.stderr)
                continue
            assert (r.returncode, path, r.stderr) == (0, "fast", ""), r.stderr
            assert want.returncode == 0, want.stderr
            assert _freezer_files(root, "fast") == _freezer_files(root, "full")
            assert json.loads(full(root, "state", "fast").stdout)["status"] == \
                json.loads(full(root, "state", "full").stdout)["status"]
            r, path = fast(root, cmd, "fast")           # again: refused, as by pyoci.cli
            want = full(root, cmd, "full")
            assert (path, r.returncode) == ("full", 1) and r.stderr == want.stderr
        for cid in ("fast", "full"):
            if status == "created":
                pyoci("start", cid, check=True)
            elif status == "running":
                pyoci("kill", cid, "KILL", check=True)
                assert _wait_stopped(root, cid) == "stopped"


def _fake_container(tmp_path, name: str, driver: str, frozen: bool, events: str) -> str:
    """A state root with container c1 (its init: this test process) whose cgroup freezer
    files are plain files in tmp_path/name; returns the root."""
    root, cg_dir = tmp_path / name / "root", tmp_path / name / "cg"
    (root / "c1").mkdir(parents=True)
    cg_dir.mkdir()
    if driver == "v1":
        (cg_dir / "freezer.state").write_text("FROZEN\n" if frozen else "THAWED\n")
        (cg_dir / "freezer.self_freezing").write_text("1\n" if frozen else "0\n")
        cg = {"driver": "v1", "paths": {"freezer": str(cg_dir)}, "unified": None,
              "created": [str(cg_dir)]}
    else:
        (cg_dir / "cgroup.freeze").write_text("1\n" if frozen else "0\n")
        (cg_dir / "cgroup.events").write_text(f"populated 1\nfrozen {events}\n")
        cg = {"driver": "v2", "path": str(cg_dir), "mountpoint": str(tmp_path / name),
              "created": [str(cg_dir)]}
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    (root / "c1" / "state.json").write_text(json.dumps({
        "id": "c1", "bundle": str(tmp_path), "rootfs": "", "pid": os.getpid(),
        "startTime": start, "cgroup": cg}))
    return str(root)


def _files(root: str) -> dict:
    cg = os.path.join(os.path.dirname(root), "cg")
    return {n: open(os.path.join(cg, n)).read() for n in sorted(os.listdir(cg))}


@pytest.mark.parametrize("driver", ["v1", "v2"])
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("command", ["pause", "resume"])
def test_pause_resume_write_what_the_drivers_write(tmp_path, driver, frozen, command):
    from pyoci import ops
    from pyoci.errors import StateError

    fast_root = _fake_container(tmp_path, "fast", driver, frozen, "1")
    full_root = _fake_container(tmp_path, "full", driver, frozen, "1")
    allowed = frozen == (command == "resume")
    try:
        getattr(ops, command)(full_root, "c1")
    except StateError:
        assert not allowed
    else:
        assert allowed
    if allowed:
        assert fastpath._pause(fast_root, "c1", command == "pause") == 0
    else:
        with pytest.raises(fastpath._Fallback):
            fastpath._pause(fast_root, "c1", command == "pause")
    assert _files(fast_root) == _files(full_root)


def test_pause_hands_a_slow_freeze_to_the_driver(tmp_path, monkeypatch):
    root = _fake_container(tmp_path, "fast", "v2", False, "0")     # not frozen yet
    calls = []
    driver_freeze = fastpath._driver_freeze
    monkeypatch.setattr(fastpath, "_driver_freeze", lambda cg, on: calls.append((cg, on)))
    assert fastpath._pause(root, "c1", True) == 0
    assert [(cg["path"], on) for cg, on in calls] == [(os.path.dirname(root) + "/cg", True)]
    # the driver's errors are reported as pyoci.cli would
    os.unlink(os.path.dirname(root) + "/cg/cgroup.freeze")
    with pytest.raises(fastpath._Reported) as e:
        driver_freeze({"driver": "v2", "path": os.path.dirname(root) + "/cg",
                       "mountpoint": os.path.dirname(root),
                       "created": [os.path.dirname(root) + "/cg"]}, True)
    assert "freezer not supported" in str(e.value.args[0])


@pytest.mark.parametrize("cg", [None, {}, {"driver": "systemd"}, {"driver": "v1", "paths": {}},
                                {"driver": "v1", "paths": [], "unified": "/x"},
                                {"driver": "v2", "path": "relative"}])
def test_unusual_cgroups_leave_pause_to_the_full_path(cg):
    with pytest.raises(fastpath._Fallback):
        fastpath._freezer(cg)


# --- exec -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, cmd", [
    (["exec", "x"], "exec"), (["--root", "/r", "exec"], "exec"), (["--root=/r", "exec"], "exec"),
    (["--log", "exec", "state"], "state"), (["--debug", "-root", "exec", "ps"], "ps"),
    (["--", "exec"], "exec"), (["--root"], None), ([], None), (["-", "x"], "-"),
    (["--systemd-cgroup", "--criu", "c", "exec"], "exec"),
])
def test_command_word_after_global_flags(argv, cmd):
    assert fastpath._command(argv) == cmd


def test_exec_warm_up_uses_a_scratch_cgroup_of_its_own(monkeypatch):
    """exec's warm-up is pyoci.warmup's: a placeholder in a scratch cgroup pyoci makes and
    removes; the caller is never moved, not even into its own cgroup."""
    from pyoci import warmup

    procs = _own_cgroup2_procs()
    base = os.path.dirname(procs)
    with open("/proc/self/cgroup") as f:
        before = f.read()
    seen = []
    real_mkdir = warmup.posix.mkdir

    def mkdir(path, mode=0o777):
        seen.append(path)
        return real_mkdir(path, mode)

    monkeypatch.setattr(warmup.posix, "mkdir", mkdir)
    monkeypatch.setattr(fastpath, "_warm", [])
    fastpath._exec_warmup(["--root", "/r", "exec", "c1", "true"])
    assert fastpath._warm == [1]
    warmup.finish()
    assert seen == [f"{base}/pyoci-warmup-{os.getpid()}"]
    assert not os.path.exists(seen[0])
    with open("/proc/self/cgroup") as f:
        assert f.read() == before
    fastpath._exec_warmup(["state", "c1"])          # other commands: nothing
    assert seen == [f"{base}/pyoci-warmup-{os.getpid()}"]


def _own_cgroup2_procs() -> str:
    from pyoci import warmup

    base = warmup._cgroup2_dir()
    if base is None:
        pytest.skip("no cgroup2 mount")
    return base + "/cgroup.procs"


@pytest.mark.parametrize("driver", ["v1", "v2"])
def test_pause_falls_back_for_a_cgroup_pyoci_did_not_create(tmp_path, driver):
    """A freezer cgroup that is not in "created" (linux.cgroupsPath named an existing one)
    is never written by the fast path: the full path refuses to freeze it."""
    root = _fake_container(tmp_path, "fast", driver, False, "0")
    path = os.path.join(root, "c1", "state.json")
    with open(path) as f:
        doc = json.load(f)
    doc["cgroup"]["created"] = []
    with open(path, "w") as f:
        json.dump(doc, f)
    from pyoci import ops
    from pyoci.errors import PyociError

    before = _files(root)
    with pytest.raises(fastpath._Fallback):
        fastpath._pause(root, "c1", True)
    assert _files(root) == before
    with pytest.raises(PyociError, match="not created by pyoci"):
        ops.pause(root, "c1")
    assert _files(root) == before
