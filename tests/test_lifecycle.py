"""Real containers through the CLI: the lifecycle and state rules, each where it matters run
with both pyoci and runc on the same bundle (the `runtime` fixture) and compared."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from support.harness import reap_zombies

pytestmark = pytest.mark.integration


def wait_status(rt, cid, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        reap_zombies()
        s = rt.state(cid)["status"]
        if s == want or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


def cfg_with(config, args, **proc):
    config["process"]["args"] = args
    config["process"].update(proc)
    return config


# --- run --------------------------------------------------------------------------------

@pytest.mark.parametrize("args,code", [
    (["true"], 0), (["sh", "-c", "exit 3"], 3), (["sh", "-c", "kill -9 $$"], 137),
])
def test_run_exit_code(runtime, bundle_factory, config, args, code):
    # Without a pid namespace the process is not an init, so it can die of its own SIGKILL.
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    b = bundle_factory(cfg_with(config, args))
    r = runtime("run", "c1", cwd=b)
    assert r.returncode == code, r.stderr
    assert runtime("state", "c1").returncode == 1     # run deletes the container


def test_run_sees_the_configured_environment(pyoci, runc, bundle_factory, config):
    script = ("echo host=$(hostname); echo cwd=$(pwd); echo user=$(id -u):$(id -g); "
              "echo env=$FOO; echo home=$HOME; echo pid=$$; ls /proc/self/ns >/dev/null; "
              "cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs)'; umask; "
              "grep -c . /proc/self/mountinfo >/dev/null; echo ro=$(touch /x 2>/dev/null "
              "&& echo no || echo yes)")
    cfg = cfg_with(config, ["sh", "-c", script], cwd="/tmp", env=["PATH=/bin:/usr/bin",
                                                                 "FOO=bar"])
    cfg["hostname"] = "box"
    outs = {}
    for rt in (pyoci, runc):
        b = bundle_factory(cfg)
        r = rt("run", "env1", cwd=b)
        assert r.returncode == 0, f"{rt.name}: {r.stderr}"
        outs[rt.name] = r.stdout
    assert "host=box" in outs["pyoci"] and "env=bar" in outs["pyoci"]
    assert "pid=1" in outs["pyoci"] and "ro=yes" in outs["pyoci"]
    assert outs["pyoci"] == outs["runc"]


# --- create / start / state / kill / delete -------------------------------------------

def test_create_start_kill_delete(runtime, bundle_factory, config, tmp_path):
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    pidfile = tmp_path / "pid"
    runtime("create", "--bundle", b, "--pid-file", str(pidfile), "c1", check=True)
    st = runtime.state("c1")
    assert st["status"] == "created" and st["id"] == "c1"
    assert st["pid"] > 0 and int(pidfile.read_text()) == st["pid"]
    assert st["bundle"] == b and os.path.isabs(st["bundle"])
    runtime("start", "c1", check=True)
    assert wait_status(runtime, "c1", "running") == "running"
    r = runtime("start", "c1")
    assert r.returncode == 1
    assert runtime.state("c1")["status"] == "running"     # a second start changes nothing
    r = runtime("delete", "c1")
    assert r.returncode == 1                               # running: needs --force
    runtime("kill", "c1", "KILL", check=True)
    assert wait_status(runtime, "c1", "stopped") == "stopped"
    assert runtime("kill", "c1", "KILL").returncode == 1   # stopped: kill errors
    assert runtime("kill", "--all", "c1", "KILL").returncode == 0
    runtime("delete", "c1", check=True)
    assert runtime("state", "c1").returncode == 1
    assert runtime("delete", "c1").returncode == 1
    assert runtime("delete", "--force", "c1").returncode == 0


def test_state_validates_against_schema(pyoci, bundle_factory, config):
    from pyoci.spec.validate import validate_state

    config["annotations"] = {"org.example.key": "value"}
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    pyoci("create", "-b", b, "s1", check=True)
    st = pyoci.state("s1")
    validate_state(st)
    assert st["annotations"] == {"org.example.key": "value"}
    pyoci("delete", "--force", "s1", check=True)


def test_delete_created_needs_force(pyoci, bundle_factory, config):
    """runtime-spec: delete of a container that is not stopped is an error (runc 1.1 deletes a
    created one anyway; pyoci follows the spec)."""
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    pyoci("create", "-b", b, "c2", check=True)
    pid = pyoci.state("c2")["pid"]
    r = pyoci("delete", "c2")
    assert r.returncode == 1 and "created" in r.stderr
    assert pyoci.state("c2")["status"] == "created"
    pyoci("delete", "--force", "c2", check=True)
    assert not os.path.exists(f"/proc/{pid}") or _zombie_or_gone(pid)


def _zombie_or_gone(pid):
    reap_zombies()
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_force_delete_running_kills_it(runtime, bundle_factory, config):
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    runtime("run", "--detach", "--bundle", b, "c3", check=True)
    pid = runtime.state("c3")["pid"]
    runtime("delete", "--force", "c3", check=True)
    assert _zombie_or_gone(pid)
    assert runtime("state", "c3").returncode == 1


def test_duplicate_id_is_refused(runtime, bundle_factory, config):
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    runtime("create", "-b", b, "dup", check=True)
    pid = runtime.state("dup")["pid"]
    r = runtime("create", "-b", b, "dup")
    assert r.returncode == 1
    assert runtime.state("dup")["pid"] == pid


@pytest.mark.parametrize("bad_id", ["a/b", "..", "x y", ""])
def test_invalid_id_leaves_nothing(pyoci, bundle_factory, config, bad_id):
    b = bundle_factory(config)
    r = pyoci("create", "-b", b, bad_id)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert not os.path.exists(pyoci.root) or os.listdir(pyoci.root) == []


def test_changes_to_config_after_create_have_no_effect(runtime, bundle_factory, config):
    b = bundle_factory(cfg_with(config, ["sh", "-c", "echo original"]))
    log = os.path.join(b, "out")
    with open(log, "w") as out:
        runtime("create", "-b", b, "cfg", stdout=out, check=True)
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["args"] = ["sh", "-c", "echo changed"]
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    runtime("start", "cfg", check=True)
    wait_status(runtime, "cfg", "stopped")
    with open(log) as f:
        assert f.read() == "original\n"


def test_list(pyoci, bundle_factory, config):
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    pyoci("create", "-b", b, "l1", check=True)
    r = pyoci("list", "--format", "json", check=True)
    items = json.loads(r.stdout)
    assert [i["id"] for i in items] == ["l1"] and items[0]["status"] == "created"
    assert pyoci("list", "-q", check=True).stdout == "l1\n"
    table = pyoci("list", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split()[:3] == ["l1", str(items[0]["pid"]), "created"]


def test_zombie_init_is_stopped(pyoci, bundle_factory, config):
    """A container init whose parent is gone stays a zombie until its reaper waits; it must
    not be taken for a live container."""
    b = bundle_factory(cfg_with(config, ["true"]))
    pyoci("create", "-b", b, "z1", check=True, reap=False)
    pid = json.loads(pyoci("state", "z1", reap=False).stdout)["pid"]
    pyoci("start", "z1", check=True, reap=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert json.loads(pyoci("state", "z1", reap=False).stdout)["status"] == "stopped"
    reap_zombies()


def _start_time(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def test_pid_reuse_is_not_mistaken(pyoci, bundle_factory, config):
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    pyoci("create", "-b", b, "r1", check=True)
    path = os.path.join(pyoci.root, "r1", "state.json")
    with open(path) as f:
        doc = json.load(f)
    real_pid = doc["pid"]
    sleeper = subprocess.Popen(["sleep", "100"])
    # a process started in the same clock tick as the init has the same start time: PID
    # reuse cannot be told apart then (nor by runc); make sure the sleeper's differs
    while _start_time(sleeper.pid) == _start_time(real_pid):
        sleeper.kill()
        sleeper.wait()
        sleeper = subprocess.Popen(["sleep", "100"])
    try:
        doc["pid"] = sleeper.pid                 # a live process that is not the init
        with open(path, "w") as f:
            json.dump(doc, f)
        assert pyoci.state("r1")["status"] == "stopped"
        assert pyoci("kill", "r1", "KILL").returncode == 1
        assert sleeper.poll() is None            # not signalled
    finally:
        sleeper.kill()
        sleeper.wait()
        doc["pid"] = real_pid
        with open(path, "w") as f:
            json.dump(doc, f)


# --- errors leave nothing -------------------------------------------------------------

@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c.update(ociVersion="9.0.0"), "ociVersion"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "namespaces"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user", "path": "rel/ns"}),
     "namespaces"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"), "CAP_NOPE"),
    (lambda c: c["root"].update(path="missing"), "root.path"),
    (lambda c: c["process"].update(args=["/no/such/binary"]), "args"),
])
def test_bad_config_is_one_line_and_leaves_nothing(pyoci, bundle_factory, config, mutate,
                                                   needle):
    mutate(config)
    b = bundle_factory(config)
    r = pyoci("create", "-b", b, "bad")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "bad"))


def test_malformed_json(pyoci, bundle_factory):
    b = bundle_factory()
    with open(os.path.join(b, "config.json"), "w") as f:
        f.write("{not json")
    r = pyoci("create", "-b", b, "bad")
    assert r.returncode == 1 and "config.json" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "bad"))


def test_unknown_container_errors(runtime):
    for args in (["state", "nope"], ["start", "nope"], ["kill", "nope"], ["delete", "nope"]):
        r = runtime(*args)
        assert r.returncode == 1, args
        assert "does not exist" in r.stderr or "not exist" in r.stderr


def test_delete_kills_leftovers_without_pid_namespace(pyoci, bundle_factory, config):
    """Without its own pid namespace a container's background processes outlive its init;
    delete must still leave no process behind (through the cgroup)."""
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    config["process"]["args"] = ["sh", "-c", "sleep 300 & echo $! > /tmp/bg; sleep 300"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    b = bundle_factory(config)
    pyoci("run", "-d", "-b", b, "bg", check=True)
    st = pyoci.state("bg")
    deadline = time.monotonic() + 10
    bg = None
    while bg is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{st['pid']}/root/tmp/bg") as f:
                bg = int(f.read())
        except (OSError, ValueError):
            time.sleep(0.02)
    assert bg
    pyoci("kill", "bg", "KILL", check=True)
    wait_status(pyoci, "bg", "stopped")
    assert _zombie_or_gone(bg) is False                  # the background sleep still runs
    pyoci("delete", "bg", check=True)
    deadline = time.monotonic() + 10
    while not _zombie_or_gone(bg) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _zombie_or_gone(bg)


def test_run_forwards_signals(runtime, bundle_factory, config, tmp_path):
    import signal

    config["process"]["args"] = ["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; "
                                 "while :; do sleep 0.05; done"]
    b = bundle_factory(config)
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        p = subprocess.Popen(runtime.argv("run", "sig"), cwd=b, stdout=out,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while "ready" not in out_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            p.send_signal(signal.SIGTERM)
            code = p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    reap_zombies()
    assert code == 7
    assert "got-term" in out_path.read_text()


def test_sigterm_ends_a_created_container(runtime, bundle_factory, config):
    """containerd and podman stop a never-started container with SIGTERM first: the waiting
    init must die of it as runc's does (PID 1 of a namespace ignores default-handled
    signals)."""
    b = bundle_factory(cfg_with(config, ["sleep", "100"]))
    runtime("create", "-b", b, "t1", check=True)
    runtime("kill", "t1", "TERM", check=True)
    assert wait_status(runtime, "t1", "stopped") == "stopped"
    runtime("delete", "t1", check=True)
