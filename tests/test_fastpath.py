"""The lifecycle commands (state, start, kill, delete, pause, resume) are one implementation
(pyoci/ops on pyoci.state), lean by construction: built-in modules only in the common case.
Pinned here: the same exit codes, statuses and outputs as runc's for the same steps, pyoci's
own messages, what they import, and each place where the lean code reads the kernel's files
itself instead of asking the cgroup driver (the driver's answer is the reference)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from pyoci import cgstate, state
from pyoci.cgroups import v1, v2
from pyoci.errors import PyociError, StateError
from pyoci.ops import kill, pause
from support.harness import PYOCI_SCRIPT, reap_zombies

# --- parse_signal: signal.Signals' names, from _signal -----------------------------------------


def test_every_signal_name_is_signal_signals():
    for sig in signal.Signals:
        for text in (sig.name, sig.name[3:], sig.name.lower(), sig.name[3:].lower()):
            assert kill.parse_signal(text) == int(sig), text
    assert kill.parse_signal("SIGIOT") == signal.SIGABRT       # an alias


@pytest.mark.parametrize("text", ["SIG_DFL", "_DFL", "SIG_IGN", "SIGFOO", "NSIG", "SIG",
                                  "SIGRTMIN+99", "0", "65", "-1", "ITIMER_REAL", "Sigkill2"])
def test_non_signals_are_refused(text):
    with pytest.raises(PyociError, match="signal"):
        kill.parse_signal(text)


# --- frozen: the lean reading of the freezer files is the driver's frozen() ----------------------

def _cg(tmp_path, driver: str, files: dict) -> dict:
    d = tmp_path / "cg"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    if driver == "v1":
        return {"driver": "v1", "paths": {"freezer": str(d)}, "unified": None,
                "created": [str(d)]}
    return {"driver": "v2", "path": str(d), "mountpoint": str(tmp_path), "created": [str(d)]}


FREEZER_FILES = [
    ("v1", {"freezer.state": "THAWED\n", "freezer.self_freezing": "0\n"}),
    ("v1", {"freezer.state": "FROZEN\n", "freezer.self_freezing": "1\n"}),
    ("v1", {"freezer.state": "FROZEN\n", "freezer.self_freezing": "0\n"}),   # a parent's
    ("v1", {}),
    ("v2", {"cgroup.freeze": "0\n", "cgroup.events": "populated 1\nfrozen 0\n"}),
    ("v2", {"cgroup.freeze": "1\n", "cgroup.events": "populated 1\nfrozen 1\n"}),
    ("v2", {"cgroup.freeze": "1\n", "cgroup.events": "populated 1\nfrozen 0\n"}),
    ("v2", {"cgroup.freeze": "0\n", "cgroup.events": "populated 1\nfrozen 1\n"}),   # parent
    ("v2", {}),
]


@pytest.mark.parametrize("driver, files", FREEZER_FILES)
def test_status_frozen_is_the_drivers(tmp_path, driver, files):
    cg = _cg(tmp_path, driver, files)
    mgr = (v1.V1Manager if driver == "v1" else v2.V2Manager).from_state(cg)
    assert state.frozen(cg) == mgr.frozen()
    if mgr.frozen():
        assert cgstate.maybe_frozen(cg)          # the driver is asked whenever it may be
    plain = cgstate.plain_frozen(*cgstate.freezer(cg))
    assert plain in (None, mgr.frozen())         # never a different answer


def test_maybe_frozen_asks_the_driver_for_what_it_cannot_read(tmp_path):
    assert cgstate.maybe_frozen({"driver": "systemd", "id": "x"})
    assert cgstate.maybe_frozen({"driver": "v2"})            # no path: the driver decides
    assert not cgstate.maybe_frozen({"driver": "v1", "paths": {}})
    assert cgstate.freezer({"driver": "v2", "path": "/x", "created": []}) is None   # not ours
    assert cgstate.freezer({"driver": "v2", "path": "x", "created": ["x"]}) is None


# --- pause/resume: the plain writes are the driver's ----------------------------------------------

def _fake_container(tmp_path, name: str, driver: str, frozen: bool, events: str) -> str:
    """A state root with container c1 (its init: this test process) whose cgroup freezer
    files are plain files in tmp_path/name/cg; returns the root."""
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


def _outcome(fn, *args):
    try:
        fn(*args)
    except PyociError as e:
        return type(e).__name__, str(e)
    return "ok"


@pytest.mark.parametrize("driver", ["v1", "v2"])
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("command", ["pause", "resume"])
def test_pause_resume_write_what_the_drivers_write(tmp_path, monkeypatch, driver, frozen,
                                                   command):
    """The same command on two fake containers, once on the plain path, once with the
    plain path disabled (every step the driver's): same outcome, same files."""
    lean_root = _fake_container(tmp_path, "lean", driver, frozen, "1")
    driver_root = _fake_container(tmp_path, "driver", driver, frozen, "1")
    fn = getattr(pause, command)
    lean = _outcome(fn, lean_root, "c1")
    monkeypatch.setattr(cgstate, "freezer", lambda cg: None)
    assert _outcome(fn, driver_root, "c1") == lean
    assert lean == ("ok" if frozen == (command == "resume") else
                    ("StateError", "container not running" if command == "pause" else
                     "container not paused"))
    assert _files(lean_root) == _files(driver_root)


def test_pause_hands_a_slow_freeze_to_the_driver(tmp_path, monkeypatch):
    root = _fake_container(tmp_path, "lean", "v2", False, "0")      # does not freeze at once
    calls = []
    monkeypatch.setattr(v2.V2Manager, "freeze", lambda self: calls.append(self.path))
    pause.pause(root, "c1")
    assert calls == [os.path.dirname(root) + "/cg"]
    assert _files(root)["cgroup.freeze"].strip() == "1"


def test_pause_reports_the_drivers_error(tmp_path):
    root = _fake_container(tmp_path, "lean", "v2", False, "0")
    os.unlink(os.path.dirname(root) + "/cg/cgroup.freeze")
    with pytest.raises(PyociError, match="freezer not supported"):
        pause.pause(root, "c1")


@pytest.mark.parametrize("driver", ["v1", "v2"])
def test_pause_never_writes_a_cgroup_pyoci_did_not_create(tmp_path, driver):
    """A freezer cgroup that is not in "created" (linux.cgroupsPath named an existing one)
    is refused by the driver and never written."""
    root = _fake_container(tmp_path, "lean", driver, False, "0")
    path = os.path.join(root, "c1", "state.json")
    with open(path) as f:
        doc = json.load(f)
    doc["cgroup"]["created"] = []
    with open(path, "w") as f:
        json.dump(doc, f)
    before = _files(root)
    with pytest.raises(PyociError, match="not created by pyoci"):
        pause.pause(root, "c1")
    assert _files(root) == before


def test_resume_of_a_stopped_container(tmp_path):
    root = _fake_container(tmp_path, "lean", "v1", True, "1")
    path = os.path.join(root, "c1", "state.json")
    with open(path) as f:
        doc = json.load(f)
    doc["startTime"] += 1                 # a reused pid: the recorded init is gone
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(StateError, match="container not paused"):
        pause.resume(root, "c1")
    with pytest.raises(StateError, match="container not running"):
        pause.pause(root, "c1")


# --- against runc: the same steps, the same exit codes and statuses -------------------------------

def _steps(rt, bundle: str) -> list[tuple]:
    """(command, exit code, status after it or the output) of one lifecycle, with the
    commands refused along the way."""
    out = []

    def step(*args):
        r = rt(*args)
        try:
            status = rt.state("c1")["status"]
        except (AssertionError, ValueError):
            status = None
        out.append((" ".join(args).replace(bundle, "BUNDLE"), r.returncode, status))
        return r

    step("create", "--bundle", bundle, "c1")
    # (not `delete` of a created container: runc 1.1 kills and deletes it, pyoci follows the
    # runtime-spec and refuses: test_runtime_messages)
    step("pause", "c1")
    step("pause", "c1")                            # refused: already paused
    step("start", "c1")                            # refused: paused
    step("resume", "c1")
    step("resume", "c1")                           # refused: not paused
    step("start", "c1")
    step("start", "c1")                            # refused: running
    step("kill", "c1", "USR1")                     # ignored by the init (no handler)
    step("kill", "c1", "KILL")
    for _ in range(200):
        reap_zombies()
        if rt.state("c1")["status"] == "stopped":
            break
    step("kill", "c1")                             # refused: stopped
    step("pause", "c1")                            # refused: stopped
    step("start", "c1")                            # refused: stopped
    step("delete", "c1")
    step("state", "c1")                            # refused: gone
    step("delete", "c1")                           # refused: gone
    step("delete", "--force", "c1")                # nothing to do
    step("kill", "c1", "SIGNOPE")
    return out


@pytest.mark.integration
def test_lifecycle_exit_codes_and_statuses_are_runcs(pyoci, runc, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    got = _steps(pyoci, bundle_factory(config))
    want = _steps(runc, bundle_factory(config))
    assert [(c, rc) for c, rc, _ in got] == [(c, rc) for c, rc, _ in want]
    # runc's `kill` of a stopped container may race its status; statuses after each step
    assert [s for _, _, s in got] == [s for _, _, s in want]


@pytest.mark.integration
def test_state_document_is_runcs(pyoci, runc, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    config["annotations"] = {"org.example/ü": "x\ty"}
    docs = {}
    for rt in (pyoci, runc):
        b = bundle_factory(config)
        rt("create", "--bundle", b, "c1", check=True)
        r = rt("state", "c1", check=True)
        doc = json.loads(r.stdout)
        # two-space indent as runc's (which writes non-ASCII characters raw and no final
        # newline; pyoci escapes them, and ends the line)
        assert r.stdout == json.dumps(doc, indent=2, ensure_ascii=rt is pyoci) + \
            ("\n" if rt is pyoci else "")
        docs[rt.name] = doc
        rt("delete", "--force", "c1", check=True)
    p, r = docs["pyoci"], docs["runc"]
    assert set(p) == set(r)
    assert {k: p[k] for k in ("id", "status", "annotations")} == \
        {k: r[k] for k in ("id", "status", "annotations")}
    assert p["rootfs"].endswith("/rootfs") and p["pid"] > 0


MESSAGES = [
    (["state", "nope"], "container does not exist: nope"),
    (["start", "nope"], "container does not exist: nope"),
    (["kill", "nope"], "container does not exist: nope"),
    (["delete", "nope"], "container does not exist: nope"),
    (["pause", "nope"], "container does not exist: nope"),
    (["resume", "nope"], "container does not exist: nope"),
    (["state", "a/b"], "invalid container id format: 'a/b'"),
    (["kill", "c1", "NOPE"], "unknown signal: NOPE"),
    (["kill", "c1", "99"], "invalid signal: 99"),
    (["kill"], "kill: usage: pyoci kill [--all] <container-id> [signal]"),
    (["state"], "state: expected exactly one container id, got 0"),
    (["pause", "a", "b"], '"pause" requires exactly 1 argument(s)'),
    (["delete", "--nope", "c1"], "flag provided but not defined: --nope"),
]


@pytest.mark.parametrize("args, message", MESSAGES, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else None)
def test_error_messages_and_exit_codes(pyoci, runc, args, message):
    """One line, exit 1, as runc (whose wording differs: it does not name the id)."""
    r = pyoci(*args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"pyoci: {message}\n")
    if args[0] in ("state", "start", "kill", "delete", "pause", "resume") and \
            "nope" in args:
        assert runc(*args).returncode == 1


@pytest.mark.integration
def test_runtime_messages(pyoci, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    pyoci("create", "--bundle", bundle_factory(config), "c1", check=True)
    expect = [
        (["delete", "c1"], "cannot delete a container in the created state without --force "
                           "(runtime-spec: delete needs a stopped container)"),
        (["resume", "c1"], "container not paused"),
        (["start", "c1"], None),
        (["start", "c1"], "cannot start an already running container"),
        (["delete", "c1"], "cannot delete container that is not stopped: running"),
    ]
    for args, msg in expect:
        r = pyoci(*args)
        assert (r.returncode, r.stderr) == ((1, f"pyoci: {msg}\n") if msg else (0, "")), args
    pyoci("pause", "c1", check=True)
    r = pyoci("start", "c1")
    assert r.stderr == "pyoci: cannot start an already paused container\n"
    r = pyoci("delete", "c1")
    assert r.stderr == "pyoci: cannot delete container that is not stopped: paused\n"
    pyoci("delete", "--force", "c1", check=True)
    assert not os.path.exists(os.path.join(pyoci.root, "c1"))


# --- lean by construction: what the commands import -----------------------------------------------

# (not pyoci.errors nor pyoci.log: imported when there is something to report)
LIFECYCLE_MODULES = {"pyoci", "pyoci.launcher", "pyoci.cli", "pyoci.state", "pyoci.jsonio",
                     "pyoci.cgstate", "pyoci.ops",
                     "pyoci.ops.state", "pyoci.ops.start", "pyoci.ops.kill",
                     "pyoci.ops.delete", "pyoci.ops.pause"}


# what the interpreter loads before the command (besides built-in modules)
BOOT_MODULES = {"encodings", "encodings.aliases", "encodings.utf_8", "codecs", "io", "abc",
                "zipimport", "_frozen_importlib_external", "_json"}


def _imports(*args: str) -> tuple[int, set[str]]:
    with open(PYOCI_SCRIPT) as f:       # the command's Python part, as the command runs it
        python = f.readline()[2:].split()[0]
    p = subprocess.run([python, "-IS", "-X", "importtime", PYOCI_SCRIPT, *args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    mods = {ln.rsplit("|", 1)[1].strip() for ln in p.stderr.splitlines()
            if ln.startswith("import time:") and "|" in ln}
    return p.returncode, mods - {"imported package"}


@pytest.mark.integration
def test_lifecycle_commands_import_built_in_modules_only(pyoci, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    pyoci("create", "--bundle", bundle_factory(config), "c1", check=True)

    def check(*args: str) -> set[str]:
        """The command's imports that are not the lean path's."""
        rc, mods = _imports("--root", pyoci.root, *args)
        assert rc == 0, args
        pyoci_mods = {m for m in mods if m.split(".")[0] == "pyoci"}
        others = {m for m in mods - pyoci_mods if m not in sys.builtin_module_names}
        return (pyoci_mods - LIFECYCLE_MODULES) | (others - BOOT_MODULES)

    for args in (("state", "c1"), ("start", "c1"), ("state", "c1")):
        assert check(*args) == set(), args
    # pause and resume: the driver takes over when the kernel has not frozen the cgroup by
    # the time its file is read back (FREEZING, under load): one lean round is asked for
    extra = []
    for _ in range(5):
        extra = [check("pause", "c1"), check("state", "c1"), check("resume", "c1")]
        if extra == [set(), set(), set()]:
            break
    assert extra == [set(), set(), set()]
    assert check("kill", "c1", "KILL") == set()
    for _ in range(200):
        reap_zombies()
        if pyoci.state("c1")["status"] == "stopped":
            break
    assert check("delete", "c1") == set()
    assert not os.path.exists(os.path.join(pyoci.root, "c1"))
