"""Unit tests of the runc-compatible command line (no containers)."""

import json
import signal
import subprocess

import pytest

from support.harness import PYOCI
from pyoci import cli
from pyoci.ops.kill import parse_signal
from pyoci.errors import PyociError, UsageError


@pytest.mark.parametrize("argv", [
    ["--root", "/x", "--log", "/l", "--log-format", "json", "state", "id"],
    ["--root=/x", "--log=/l", "--log-format=json", "state", "id"],
    ["-root", "/x", "--log-format=json", "-log", "/l", "state", "id"],
])
def test_global_flags_both_forms_any_order(argv):
    g, rest = cli.parse_flags(argv, cli.GLOBAL_FLAGS, stop_at_positional=True)
    assert g == {"root": "/x", "log": "/l", "log_format": "json"}
    assert rest == ["state", "id"]


def test_command_flags_and_positionals_interleave():
    o, pos = cli.parse_flags(["--bundle", "/b", "id", "--pid-file=/p", "--no-pivot"],
                             cli.flags("create"), stop_at_positional=False)
    assert o == {"bundle": "/b", "pid_file": "/p", "no_pivot": True}
    assert pos == ["id"]
    o, pos = cli.parse_flags(["-a", "id", "KILL"], cli.flags("kill"),
                             stop_at_positional=False)
    assert o == {"all": True} and pos == ["id", "KILL"]
    o, _ = cli.parse_flags(["--detach=false", "x"], cli.flags("run"),
                           stop_at_positional=False)
    assert o == {"detach": False}


@pytest.mark.parametrize("bad", [["--nope", "x"], ["--bundle"], ["--detach=maybe", "x"]])
def test_bad_flags(bad):
    with pytest.raises(UsageError):
        cli.parse_flags(bad, cli.flags("run"), stop_at_positional=False)


@pytest.mark.parametrize("text,num", [
    (None, signal.SIGTERM), ("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("9", 9), ("15", 15),
    ("SIGUSR1", signal.SIGUSR1), ("HUP", 1), ("RTMIN", signal.SIGRTMIN),
    ("SIGRTMIN+2", signal.SIGRTMIN + 2), ("RTMAX-1", signal.SIGRTMAX - 1),
])
def test_parse_signal(text, num):
    assert parse_signal(text) == num


@pytest.mark.parametrize("bad", ["SIGFOO", "0", "999", "RTMIN+99", "-1"])
def test_parse_signal_rejects(bad):
    with pytest.raises(PyociError):
        parse_signal(bad)


def run_cli(*args, **kw):
    return subprocess.run([PYOCI, *args], capture_output=True, text=True, timeout=30, **kw)


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and "pyoci version" in r.stdout and "spec: 1.3.0" in r.stdout
    r = run_cli("--help")
    assert r.returncode == 0 and "create" in r.stdout


def test_unknown_command_is_one_line_exit_1(tmp_path):
    r = run_cli("--root", str(tmp_path), "frobnicate")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "frobnicate" in r.stderr
    assert "Traceback" not in r.stderr


def test_json_log_format(tmp_path):
    log = tmp_path / "log.json"
    r = run_cli("--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json",
                "state", "nosuch")
    assert r.returncode == 1
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["level"] == "error" and "does not exist" in last["msg"] and "time" in last


def test_spec_writes_default_config(tmp_path):
    r = run_cli("spec", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ociVersion"] == "1.3.0" and cfg["process"]["args"] == ["sh"]
    r = run_cli("spec", "--bundle", str(tmp_path))
    assert r.returncode == 1 and "exists" in r.stderr
    from pyoci.spec.validate import validate_config
    validate_config(cfg)


def test_spec_rootless(tmp_path):
    r = run_cli("spec", "--rootless", "-b", str(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"]
    assert cfg["linux"]["uidMappings"][0]["size"] == 1


def test_features_validates():
    r = run_cli("features")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ociVersionMax"] == "1.3.0"
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"]
    from pyoci.spec.validate import validate_features
    validate_features(doc)


@pytest.mark.parametrize("args", [["create"], ["list"], ["state", "x"], ["spec"]])
def test_a_log_that_cannot_be_opened_fails_in_one_line(tmp_path, args):
    """As runc: --log naming a directory (or anything that cannot be opened for appending)
    fails the command with one line, instead of a warning and then the command's own error
    (found by tests/test_fuzz.py)."""
    r = subprocess.run([PYOCI, "--root", str(tmp_path / "root"), "--log", str(tmp_path),
                        *args], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"pyoci: --log: cannot open log file {tmp_path}: "
                                     "Is a directory"], r.stderr
    assert not (tmp_path / "config.json").exists()


# --- help, from the one flag table ------------------------------------------------------------

def test_help_lists_every_command_and_global_flag():
    r = run_cli("--help")
    assert r.returncode == 0 and r.stderr == ""
    listed = [ln.split()[0] for ln in r.stdout.split("COMMANDS:\n")[1].split("\n\n")[0]
              .splitlines()]
    assert listed == sorted(cmd for cmd in cli.TABLE if cmd)
    for cmd in ("exec", "pause", "resume", "update", "events", "ps", "checkpoint", "restore"):
        assert cmd in listed
    for names, _key, _takes, text in cli.TABLE[""][2]:
        assert f"--{names[0]}" in r.stdout and text.split("{")[0] in r.stdout


@pytest.mark.parametrize("cmd", sorted(c for c in cli.TABLE if c))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help_lists_its_own_flags(cmd, flag):
    r = run_cli(cmd, flag)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith(f"NAME:\n   pyoci {cmd} - {cli.TABLE[cmd][1]}\n")
    options = r.stdout.split("OPTIONS:\n")[1]
    shown: set[str] = set()
    for ln in options.splitlines():
        head = ln.strip().split("  ")[0]
        shown |= {w.rstrip(",") for w in head.split() if w.startswith("-")}
    want = {("-" if len(n) == 1 else "--") + n for names, *_ in cli.TABLE[cmd][2] for n in names}
    assert shown == want | {"--help", "-h"}
    for _names, _key, _takes, text in cli.TABLE[cmd][2]:
        assert text in options


def test_every_flag_the_parser_takes_is_in_the_table():
    for cmd in (c for c in cli.TABLE if c):
        lookup = cli.flags(cmd)
        names = {n for names, *_ in cli.TABLE[cmd][2] for n in names} | {"help", "h"}
        assert set(lookup) == names, cmd


def test_exec_arguments_after_the_id_are_not_help():
    o, pos = cli.parse_flags(["c1", "ls", "-h"], cli.flags("exec"),
                             stop_at_positional=False, max_positionals=1)
    assert o == {} and pos == ["c1", "ls", "-h"]


def test_the_default_root_is_written_once():
    import os

    from pyoci import state

    src = os.path.dirname(cli.__file__)
    found = []
    for d, _dirs, files in os.walk(src):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(d, name)) as f:
                    if '"/run/pyoci"' in f.read():
                        found.append(os.path.relpath(os.path.join(d, name), src))
    assert found == ["state.py"]
    assert state.DEFAULT_ROOT == "/run/pyoci"
    assert "default /run/pyoci;" in cli.usage()
