"""What `create`/`run` and the container init import, and the replacements that keep slow
modules off that path: pyoci.jsonio (json on `_json`), pyoci.linux.sock (`_socket`), and the
plain-Python checks standing in for regular expressions. Each replacement is compared with
what it replaces."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyoci import jsonio
from pyoci.cgroups import common
from pyoci.errors import ConfigError, PyociError
from pyoci.linux import process, sock
from pyoci.state import check_id
from support.harness import PYOCI_SCRIPT, REPO

# Modules that must not be imported on the create/run path nor in the init: each costs
# milliseconds (or pulls in what does) and pyoci has a built-in/C replacement for it.
SLOW = ("json", "re", "enum", "signal", "socket", "selectors", "shutil", "typing",
        "functools", "collections", "importlib", "prctl", "dataclasses", "inspect",
        "logging", "warnings", "subprocess", "tempfile", "argparse",
        "pyseccomp", "seccomp", "ctypes.util",
        "google")   # protobuf: containerd-shim-pyoci-v2's alone (pyoci/shim)


def imported_modules(stderr: str) -> set[str]:
    """Module names in -X importtime output (of every process that wrote it)."""
    out = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                out.add(name)
    return out


def launcher_python() -> str:
    """The interpreter of the pyoci command (which runs PYOCI_SCRIPT with it, -IS)."""
    with open(PYOCI_SCRIPT) as f:
        return f.readline()[2:].split()[0]


SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}


@pytest.mark.parametrize("command, seccomp", [("run", False), ("create", False),
                                              ("run", True), ("create", True)])
def test_create_and_run_import_no_slow_module(pyoci, bundle_factory, config, tmp_path,
                                              command, seccomp):
    config["process"]["args"] = ["true"] if command == "run" else ["sleep", "100"]
    if seccomp:
        config["linux"]["seccomp"] = SECCOMP
        config["hooks"] = {"createRuntime": [{"path": "/bin/true"}]}
    b = bundle_factory(config)
    err = tmp_path / "importtime"
    with open(err, "wb") as f:            # a file: the init inherits stderr
        p = subprocess.run([launcher_python(), "-IS", "-X", "importtime", PYOCI_SCRIPT,
                            "--root", pyoci.root, command, "--bundle", b, "c1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                           timeout=60)
    text = err.read_text()
    if command == "create":
        pyoci("delete", "--force", "c1")
    assert p.returncode == 0, text[-2000:]
    mods = imported_modules(text)
    assert {"pyoci.ops.create", "pyoci.init", "pyoci.linux.process"} <= mods  # it did the work
    slow = sorted(m for m in mods if m.split(".")[0] in SLOW or m in SLOW)
    assert not slow, f"{command} imported {slow}"
    if command == "create":
        # a created container has no foreground: neither the runtime nor the init (its
        # signal reset, child.default_signals) loads the forwarding of pyoci.foreground
        assert "pyoci.foreground" not in mods
    assert "pyoci.linux.idmap" not in mods      # id-mapped mounts only


# --- jsonio is json ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same_float_nan(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_float_nan(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_float_nan(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(obj=json_values)
def test_jsonio_dumps_and_loads_are_json(obj):
    text = json.dumps(obj)
    assert jsonio.dumps(obj) == text
    assert jsonio.dumps(obj, indent=2) == json.dumps(obj, indent=2)
    assert same_float_nan(jsonio.loads(text), json.loads(text))
    assert same_float_nan(jsonio.loads(text.encode()), json.loads(text.encode()))
    pretty = json.dumps(obj, indent=4, ensure_ascii=False)
    assert same_float_nan(jsonio.loads(pretty.encode()), json.loads(pretty.encode()))


@pytest.mark.parametrize("data", [
    b"", b"   ", b"{", b'{"a": 1} x', b'{"a": 1}{}', b"\xef\xbb\xbf{}", "\ufeff{}",
    '{"a": 1}'.encode("utf-16"), '[1]'.encode("utf-32-le"), b"\xff", b'"\\ud800"', b"[1,]",
    b"NaN", b"-Infinity", b" \n[1e400] \t", b'{"a":1,"a":2}', b"01",
])
def test_jsonio_loads_odd_input_as_json(data):
    try:
        expected = ("ok", json.loads(data))
    except Exception as e:  # noqa: BLE001 - the same error is expected
        expected = ("error", type(e), str(e))
    try:
        got = ("ok", jsonio.loads(data))
    except Exception as e:  # noqa: BLE001
        got = ("error", type(e), str(e))
    assert same_float_nan(got[1], expected[1]) if got[0] == expected[0] == "ok" \
        else got == expected


@pytest.mark.parametrize("obj", [{1: "a"}, {"x": (1, 2)}, {"f": 1.5}, [{True: None}], set(),
                                 {"o": object()}])
def test_jsonio_dumps_odd_values_as_json(obj):
    for indent in (None, 2):
        try:
            expected = json.dumps(obj, indent=indent)
        except TypeError as e:
            with pytest.raises(TypeError, match=re.escape(str(e))):
                jsonio.dumps(obj, indent=indent)
        else:
            assert jsonio.dumps(obj, indent=indent) == expected


# --- sock is socket -----------------------------------------------------------------------

def test_signal_numbers_are_signal_signals():
    """The signals the children reset and a foreground run forwards (child.signal_numbers,
    from _signal) are those signal.Signals lists."""
    import signal

    from pyoci.linux import child

    assert child.signal_numbers() == sorted(int(s) for s in signal.Signals)


def test_sock_passes_fds_as_socket_does():
    import socket

    a, b = sock.socketpair(sock.AF_UNIX, sock.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        assert not os.get_inheritable(a.fileno())
        sock.send_fds(a, [b"one"], [r, w])
        data, fds, _, _ = socket.recv_fds(b, 100, 4)
        assert data == b"one" and len(fds) == 2
        os.write(fds[1], b"x")
        assert os.read(r, 1) == b"x"
        socket.send_fds(a, [b"two"], [w])
        data, fds2, _, _ = sock.recv_fds(b, 100, 4)
        assert data == b"two" and len(fds2) == 1
        os.write(fds2[0], b"y")
        assert os.read(fds[0], 1) == b"y"
        for fd in fds + fds2:
            os.close(fd)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


# --- cdata is ctypes ----------------------------------------------------------------------

def test_cdata_types_are_ctypes():
    import ctypes

    from pyoci.linux import cdata

    for name in ("c_int", "c_uint", "c_long", "c_ulong", "c_char_p", "c_void_p", "c_char",
                 "c_int32", "c_uint32", "c_size_t", "c_uint64"):
        ours, theirs = getattr(cdata, name), getattr(ctypes, name)
        assert cdata.sizeof(ours) == ctypes.sizeof(theirs), name
        assert ours._type_ == theirs._type_, name
    for v in (0, 1, -1, 2**31 - 1, -2**31):
        assert cdata.c_int(v).value == ctypes.c_int(v).value
    for v in (0, 2**32 - 1, 2**32, -1):
        assert cdata.c_uint(v).value == ctypes.c_uint(v).value
        assert cdata.c_ulong(v).value == ctypes.c_ulong(v).value
    assert cdata.c_char_p(b"x").value == b"x"
    ours, theirs = cdata.create_string_buffer(8), ctypes.create_string_buffer(8)
    assert (len(ours), ours.raw, ours.value) == (len(theirs), theirs.raw, theirs.value)
    ours.value = theirs.value = b"ab"
    assert (ours.raw, ours.value) == (theirs.raw, theirs.value)
    assert cdata.c_long.from_buffer(ours).value == ctypes.c_long.from_buffer(theirs).value

    class Ours(cdata.Structure):
        _fields_ = [("a", cdata.c_uint32), ("b", cdata.c_uint64), ("c", cdata.c_int32)]

    class Theirs(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint64), ("c", ctypes.c_int32)]

    assert cdata.sizeof(Ours) == ctypes.sizeof(Theirs)
    assert bytes(Ours(1, 2**64 - 1, -3)) == bytes(Theirs(1, 2**64 - 1, -3))


def test_cdata_calls_as_ctypes_cdll():
    """Same functions, restype, argtypes and errno as ctypes.CDLL(None, use_errno=True)."""
    import ctypes

    from pyoci.linux import cdata, syscalls

    ours, theirs = cdata.CDLL(None), ctypes.CDLL(None, use_errno=True)
    assert ours.getpid() == theirs.getpid() == os.getpid()
    assert ours.getpid is ours.getpid                       # made once, as ctypes
    assert ours.strlen(b"hello") == theirs.strlen(b"hello") == 5
    for lib in (ours, theirs):
        lib.labs.restype = ctypes.c_long
        lib.labs.argtypes = (cdata.c_long,)
    assert ours.labs(-2**40) == theirs.labs(-2**40) == 2**40
    assert ours.close(-1) == theirs.close(-1) == -1
    assert cdata.get_errno() == ctypes.get_errno() == 9       # EBADF, use_errno for both
    with pytest.raises(OSError) as ei:
        syscalls.pidfd_open(-5)
    assert ei.value.errno == 22 and str(ei.value).endswith("pidfd_open -5: Invalid argument")
    fd = syscalls.pidfd_open(os.getpid())
    os.close(fd)
    assert syscalls._b("\udcff/x") == os.fsencode("\udcff/x")


def test_syscalls_import_neither_ctypes_nor_os():
    """The process of `pyoci exec` that only re-executes itself (pyoci.linux.sealed) needs
    open_tree and mount_setattr: importing them costs no ctypes and no os (~3 ms)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pyoci.linux.syscalls; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([launcher_python(), "-IS", "-c", code, REPO], capture_output=True,
                         text=True, check=True).stdout.split()
    assert "pyoci.linux.syscalls" in out
    assert "ctypes" not in out and "os" not in out, out


# --- plain checks equal to the regular expressions they replace ---------------------------

CHARS = st.text(alphabet=st.sampled_from(list("0123456789-.+,_ \n\t\u0663\u00e9abcxzABCKMGPTB")),
                max_size=12)


@settings(max_examples=500, deadline=None)
@given(s=CHARS)
def test_plain_checks_are_the_regexes(s):
    assert common._cpulist_ok(s) == bool(
        re.match(r"^\s*(\d+(-\d+)?)(\s*,\s*\d+(-\d+)?)*\s*$", s))
    assert common._pagesize_ok(s) == bool(re.match(r"^(\d+)(KB|MB|GB|TB|PB)$", s))
    for k in (s, "memory." + s, "a" + s):
        assert common.unified_key_ok(k) == bool(
            re.match(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_.\-]+$", k))


def test_container_id_characters_are_those_of_backslash_w():
    word = re.compile(r"^[\w+\-.]+$")
    for cp in range(0x110000):
        cid = "a" + chr(cp)
        ok = word.match(cid) is not None and cid != "a\n"  # the old `$` let "\n" through
        try:
            check_id(cid)
        except PyociError:
            assert not ok, repr(cid)
        else:
            assert ok, repr(cid)


@pytest.mark.parametrize("text, cpus", [("0-2,4", {0, 1, 2, 4}), (" 3 , ,5", {3, 5}),
                                        ("\u0663", {3}), ("1-\u0662", {1, 2})])
def test_cpu_list(text, cpus):
    assert process.parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["1 -2", "a", "1-", "-1", "1-2-3", "+1", ","])
def test_cpu_list_refused(text):
    with pytest.raises(ConfigError):
        process.parse_cpu_list(text)


def test_hugepage_sizes_from_sysfs_names(monkeypatch):
    names = ["hugepages-1048576kB", "hugepages-2048kB", "hugepages-x", "other", "hugepages-kB"]
    monkeypatch.setattr(common.os, "listdir", lambda _p: names)
    assert common.hugepage_sizes() == ["2MB", "1GB"]


# --- the other commands: exec, pause, resume, update, events, ps, list, spec, features -----

OTHER_COMMANDS = [
    ["exec", "c1", "true"], ["exec", "-d", "c1", "true"], ["exec", "-t", "c1", "true"],
    ["pause", "c1"], ["resume", "c1"], ["update", "--pids-limit", "100", "c1"],
    ["events", "--stats", "c1"], ["ps", "c1"], ["ps", "--format", "json", "c1"], ["list"],
    ["spec", "--bundle", "{tmp}"], ["features"],
]


@pytest.mark.parametrize("args", OTHER_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_other_commands_import_no_slow_module(pyoci, bundle_factory, config, tmp_path, args):
    config["process"]["args"] = ["sleep", "100"]
    pyoci("run", "-d", "--bundle", bundle_factory(config), "c1", check=True)
    if args[0] == "resume":
        pyoci("pause", "c1", check=True)
    err = tmp_path / "importtime"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    pid_file = tmp_path / "exec.pid"
    if argv[:2] == ["exec", "-d"]:
        argv[2:2] = ["--pid-file", str(pid_file)]
    with open(err, "wb") as f:
        p = subprocess.run([launcher_python(), "-IS", "-X", "importtime", PYOCI_SCRIPT,
                            "--root", pyoci.root, *argv],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                           timeout=60)
    text = err.read_text()
    assert p.returncode == 0, text[-2000:]
    if pid_file.exists():
        # the detached process is reparented to us (a subreaper): reap it, or it stays a
        # zombie in the container's cgroup and the cgroup cannot be removed at cleanup
        os.waitpid(int(pid_file.read_text()), 0)
    mods = imported_modules(text)
    assert "pyoci.launcher" in mods
    slow = sorted(m for m in mods if m.split(".")[0] in SLOW or m in SLOW)
    assert not slow, f"{args[0]} imported {slow}"


# Runs the launcher with an audit hook that reports every module loaded by a process that is
# no longer in the host's mount namespace (an import there would resolve in the container's
# root filesystem), and every execve from inside the container (the hook did see that side).
_AFTER_SETNS_HOOK = """
import os, sys
_host = os.readlink("/proc/self/ns/mnt")
def _hook(event, args):
    if event not in ("import", "os.exec"):
        return
    try:
        inside = os.readlink("/proc/self/ns/mnt") != _host
    except OSError:
        inside = True
    if inside:
        os.write(2, f"AFTER-SETNS {event} {args[0]}\\n".encode())
sys.addaudithook(_hook)
sys.argv = sys.argv[1:]
with open(sys.argv[0]) as f:
    code = compile(f.read(), sys.argv[0], "exec")
exec(code, {"__name__": "__main__"})
"""


@pytest.mark.parametrize("variant", ["plain", "tty", "user-caps", "seccomp", "seccomp-nnp",
                                     "attributes", "process-file"])
def test_exec_imports_nothing_after_joining_the_mount_namespace(pyoci, bundle_factory, config,
                                                               tmp_path, variant):
    config["process"]["args"] = ["sleep", "100"]
    config["process"]["noNewPrivileges"] = variant == "seccomp-nnp"
    if variant.startswith("seccomp"):
        config["linux"]["seccomp"] = SECCOMP
    if variant == "attributes":
        config["linux"]["personality"] = {"domain": "LINUX"}
    pyoci("run", "-d", "--bundle", bundle_factory(config), "c1", check=True)
    args = {"plain": ["c1", "true"], "tty": ["-t", "c1", "true"],
            "user-caps": ["-u", "1000:1000", "--cap", "CAP_KILL", "-g", "29", "c1", "true"],
            "seccomp": ["c1", "true"], "seccomp-nnp": ["c1", "true"],
            "attributes": ["--process", str(tmp_path / "p.json"), "c1"],
            "process-file": ["--process", str(tmp_path / "p.json"), "c1"]}[variant]
    proc = {"args": ["/bin/true"], "cwd": "/tmp", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0}}
    if variant == "attributes":
        proc.update(rlimits=[{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}],
                    oomScoreAdj=10, ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4},
                    scheduler={"policy": "SCHED_OTHER", "nice": 1},
                    execCPUAffinity={"initial": "0", "final": "0"})
    (tmp_path / "p.json").write_text(json.dumps(proc))
    hook = tmp_path / "hook.py"
    hook.write_text(_AFTER_SETNS_HOOK)
    err = tmp_path / "err"
    with open(err, "wb") as f:
        p = subprocess.run([launcher_python(), "-IS", str(hook), PYOCI_SCRIPT, "--root", pyoci.root,
                            "exec", *args], stdin=subprocess.DEVNULL,
                           stdout=f, stderr=f, timeout=60)     # with -t: through the pty
    lines = err.read_text().splitlines()
    assert p.returncode == 0, lines
    assert [ln for ln in lines if ln.startswith("AFTER-SETNS os.exec")], lines   # it looked
    assert [ln for ln in lines if ln.startswith("AFTER-SETNS import")] == []


# --- replacements in pyoci.units, pyoci.ops, pyoci.spec.default ---------------------------

_GO_UNITS_SIZE = r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"
_GO_DURATION_PART = r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
SIZES = st.text(alphabet=st.sampled_from(list("0123456789. \n\u0663kKmMgGiIbBxX-e")),
                max_size=10)
DURATIONS = st.text(alphabet=st.sampled_from(list("0123456789.+-\u0663nsuµμmhx ")),
                    max_size=10)


def _regex_ram_in_bytes(s: str) -> int:
    """pyoci.units.ram_in_bytes as it was, on re."""
    m = re.match(_GO_UNITS_SIZE, s)
    if not m:
        raise ValueError(f"invalid size: '{s}'")
    try:
        size = float(m.group(1))
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{m.group(1)}": invalid syntax') \
            from None
    unit = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    return int(size * unit.get((m.group(3) or "").lower(), 1))


def _regex_parse_duration(s: str) -> float:
    """pyoci.units.parse_duration as it was, on re."""
    units = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
    part = re.compile(_GO_DURATION_PART)
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(s)
    total, pos = 0.0, 0
    while pos < len(body):
        m = part.match(body, pos)
        if not m:
            raise ValueError(s)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return -total if s.startswith("-") else total


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as e:
        return ("error", str(e))
    except Exception as e:  # noqa: BLE001 - the same exception is expected
        return ("error", type(e), str(e))


@settings(max_examples=1000, deadline=None)
@given(s=SIZES)
def test_ram_in_bytes_is_the_regex(s):
    from pyoci import units

    assert _outcome(units.ram_in_bytes, s) == _outcome(_regex_ram_in_bytes, s)
    for unit in ("", "k", "MiB", " gb", "Tb\n", "pB "):
        assert _outcome(units.ram_in_bytes, s + unit) == _outcome(_regex_ram_in_bytes, s + unit)


@settings(max_examples=1000, deadline=None)
@given(s=DURATIONS)
def test_parse_duration_is_the_regex(s):
    from pyoci import units

    assert _outcome(units.parse_duration, s) == _outcome(_regex_parse_duration, s)


@settings(max_examples=500, deadline=None)
@given(s=st.text(alphabet=st.sampled_from(list("0123456789+-\u0663 x\n")), max_size=6))
def test_integer_flags_are_the_regex(s):
    from pyoci.errors import UsageError
    from pyoci.ops import update

    for kind, pattern in (("uint", r"\d+"), ("sint", r"[+-]?\d+")):
        try:
            got = ("ok", update._parse_flag("cpu-period", kind, s))
        except UsageError as e:
            got = ("error", "invalid syntax" in str(e))
        want = ("error", True) if re.fullmatch(pattern, s) is None else ("ok", int(s))
        if want[0] == "ok" and not 0 <= want[1] < 1 << 64 and kind == "uint":
            want = ("error", False)
        if want[0] == "ok" and not -(1 << 63) <= want[1] < 1 << 63 and kind == "sint":
            want = ("error", False)
        assert got == want


@pytest.mark.parametrize("rootless", [False, True])
def test_spec_is_json_dump_with_tabs(rootless):
    from pyoci.spec import default

    doc = default.default_spec(rootless)
    assert default.tab_indented(doc) == json.dumps(doc, indent="\t")
    odd = {"a": [1, {"b": "x\n  y", "c": []}, {}], "d": "\t \u00e9", "e": [[]]}
    assert default.tab_indented(odd) == json.dumps(odd, indent="\t")


@pytest.mark.parametrize("args", [["-ef"], ["-o", "pid,comm"], ["--no-such-flag"],
                                  ["-p", "1", "-o", "pid="]])
def test_run_ps_is_subprocess_run(args):
    from pyoci.ops import ps

    p = subprocess.run(["ps", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL)
    code, out = ps._run_ps(args)
    assert code == p.returncode
    if args[0] in ("-ef", "-o"):        # the process list itself changes between the runs
        assert out.splitlines()[0] == p.stdout.splitlines()[0]
    else:
        assert out == p.stdout
