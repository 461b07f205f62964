"""Real containers exercising config.json fields end to end: hooks, terminal and console
socket, preserved fds, user/time namespaces, sysctl, rlimits, seccomp, devices, joining
namespaces. Where runc supports the same thing, the test runs both and compares."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from support.harness import reap_zombies

pytestmark = pytest.mark.integration

HOOK = r'''#!/bin/sh
# records: <name> <status> <pid>
st=$(cat)
status=$(echo "$st" | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p')
pid=$(echo "$st" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
echo "$1 $status $pid" >> "$2"
exit ${3:-0}
'''


def run_out(rt, b, cid="c"):
    r = rt("run", cid, cwd=b)
    return r.returncode, r.stdout, r.stderr


def make_hook(tmp_path):
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return str(path)


def hooks_config(config, hook, log, fail=None):
    kinds = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop"]
    config["hooks"] = {k: [{"path": hook, "args": ["hook", k, log] +
                            (["1"] if k == fail else [])}] for k in kinds}
    # createContainer/startContainer run in the container's mount namespace before/after
    # pivot_root: make the hook and the log reachable at the same path inside.
    d = os.path.dirname(log)
    config["mounts"].append({"destination": d, "type": "bind", "source": d,
                             "options": ["rbind", "rw"]})
    return config


def test_hooks_order_and_statuses(pyoci, bundle_factory, config, tmp_path):
    hookdir = tmp_path / "hooks"
    hookdir.mkdir()
    hook = make_hook(hookdir)
    log = str(hookdir / "log")
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(hooks_config(config, hook, log))
    pyoci("create", "-b", b, "h1", check=True)
    pid = pyoci.state("h1")["pid"]
    pyoci("start", "h1", check=True)
    pyoci("kill", "h1", "KILL", check=True)
    deadline = time.monotonic() + 10
    while pyoci.state("h1")["status"] != "stopped" and time.monotonic() < deadline:
        reap_zombies()
        time.sleep(0.02)
    pyoci("delete", "h1", check=True)
    lines = [ln.split() for ln in open(log).read().splitlines()]
    assert [ln[0] for ln in lines] == ["prestart", "createRuntime", "createContainer",
                                       "startContainer", "poststart", "poststop"]
    assert [ln[1] for ln in lines] == ["creating", "creating", "creating", "created",
                                       "running", "stopped"]
    assert all(int(ln[2]) == pid for ln in lines[:5])


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_leaves_nothing(pyoci, bundle_factory, config, tmp_path, kind):
    hookdir = tmp_path / "hooks"
    hookdir.mkdir()
    hook = make_hook(hookdir)
    log = str(hookdir / "log")
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(hooks_config(config, hook, log, fail=kind))
    r = pyoci("create", "-b", b, "h2")
    assert r.returncode == 1 and kind in r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "h2"))
    names = [ln.split()[0] for ln in open(log).read().splitlines()]
    assert names[-1] == "poststop"            # the lifecycle continues at destroy


def test_failing_poststop_only_warns(pyoci, bundle_factory, config, tmp_path):
    hookdir = tmp_path / "hooks"
    hookdir.mkdir()
    hook = make_hook(hookdir)
    log = str(hookdir / "log")
    config["process"]["args"] = ["true"]
    b = bundle_factory(hooks_config(config, hook, log, fail="poststop"))
    r = pyoci("run", "h3", cwd=b)
    assert r.returncode == 0, r.stderr
    assert "poststop" in r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "h3"))


def test_hook_timeout(pyoci, bundle_factory, config, tmp_path):
    config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"],
                                          "timeout": 1}]}
    b = bundle_factory(config)
    t0 = time.monotonic()
    r = pyoci("create", "-b", b, "h4")
    assert r.returncode == 1 and "timed out" in r.stderr
    assert time.monotonic() - t0 < 25
    assert not os.path.exists(os.path.join(pyoci.root, "h4"))


# --- terminal ---------------------------------------------------------------------------

def _console_listener(tmp_path):
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv, path


def test_terminal_master_over_console_socket(runtime, bundle_factory, config, tmp_path):
    config["process"]["terminal"] = True
    config["process"]["args"] = ["sh", "-c", "tty; read line; echo got:$line"]
    b = bundle_factory(config)
    srv, path = _console_listener(tmp_path)
    with srv:
        runtime("create", "-b", b, "--console-socket", path, "t1", check=True)
        conn, _ = srv.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        master = fds[0]
        try:
            runtime("start", "t1", check=True)
            os.write(master, b"hello\n")
            out = b""
            deadline = time.monotonic() + 10
            while b"got:hello" not in out and time.monotonic() < deadline:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        finally:
            os.close(master)
    assert b"/dev/pts/" in out and b"got:hello" in out


def test_terminal_without_socket_is_refused_when_detached(runtime, bundle_factory, config):
    config["process"]["terminal"] = True
    b = bundle_factory(config)
    r = runtime("create", "-b", b, "t2")
    assert r.returncode == 1
    assert runtime("state", "t2").returncode == 1


# --- fds ----------------------------------------------------------------------------------

def test_preserve_fds(runtime, bundle_factory, config, tmp_path):
    config["process"]["args"] = ["sh", "-c", "for n in 3 4 5; do test -e /proc/$$/fd/$n && "
                                 "echo fd$n; done; cat <&3"]
    b = bundle_factory(config)
    data = tmp_path / "data"
    data.write_text("preserved\n")
    with open(data) as f3, open(data) as f4:
        # Put the file at fd 3 and another at fd 4 for the runtime, as a client would.
        r = subprocess.run(runtime.argv("run", "--preserve-fds", "1", "p1"), cwd=b,
                           pass_fds=(3,), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30,
                           preexec_fn=lambda: (os.dup2(f3.fileno(), 3),
                                               os.dup2(f4.fileno(), 4)))
    reap_zombies()
    assert r.returncode == 0, r.stderr
    # the preserved fd 3 is there; fd 4 (open in the caller, not preserved) is not
    assert r.stdout.split() == ["fd3", "preserved"]


# --- namespaces ------------------------------------------------------------------------

def test_user_namespace_mappings(runtime, bundle_factory, config):
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["process"]["args"] = ["sh", "-c", "cat /proc/self/uid_map; id -u"]
    # The bundle belongs to host root, unmapped in the container: every directory on the way
    # must be searchable by others.
    b = bundle_factory(config)
    d = b
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o005)
        d = os.path.dirname(d)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    assert out.split()[:3] == ["0", "100000", "65536"] and out.split()[-1] == "0"


def test_time_namespace_offsets(pyoci, bundle_factory, config):
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    config["process"]["args"] = ["cat", "/proc/uptime"]
    b = bundle_factory(config)
    code, out, err = run_out(pyoci, b)
    assert code == 0, err
    assert float(out.split()[0]) > 86400 * 365


def test_join_network_namespace_by_path(runtime, bundle_factory, config):
    holder = subprocess.Popen(["unshare", "--net", "sleep", "100"])
    try:
        for _ in range(100):
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        want = os.readlink(f"/proc/{holder.pid}/ns/net")
        config["linux"]["namespaces"] = [
            n if n["type"] != "network" else {"type": "network",
                                              "path": f"/proc/{holder.pid}/ns/net"}
            for n in config["linux"]["namespaces"]]
        config["process"]["args"] = ["readlink", "/proc/self/ns/net"]
        b = bundle_factory(config)
        code, out, err = run_out(runtime, b)
        assert code == 0, err
        assert out.strip() == want
    finally:
        holder.kill()
        holder.wait()


def test_sysctl_and_rlimits(runtime, bundle_factory, config):
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
                                    {"type": "RLIMIT_NPROC", "soft": 1111, "hard": 2222}]
    config["process"]["args"] = ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward "
                                 "/proc/sys/kernel/shmmax; ulimit -n; ulimit -Hn; ulimit -u"]
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    assert out.split() == ["1", "123456789", "321", "654", "1111"]


def test_non_namespaced_sysctl_is_refused(pyoci, bundle_factory, config):
    config["linux"]["sysctl"] = {"vm.swappiness": "10"}
    b = bundle_factory(config)
    r = pyoci("create", "-b", b, "s")
    assert r.returncode == 1 and "vm.swappiness" in r.stderr


def test_seccomp_errno(runtime, bundle_factory, config):
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 13}]}
    config["process"]["args"] = ["sh", "-c", "mkdir /tmp/x; echo rc=$?"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    assert "Permission denied" in err or "Permission denied" in out
    assert "rc=1" in out


def test_devices_created(runtime, bundle_factory, config):
    config["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10,
                                   "minor": 229, "fileMode": 0o640, "uid": 0, "gid": 0}]
    config["process"]["args"] = ["sh", "-c", "stat -c '%t %T %a %F' /dev/fuse /dev/null"]
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "a e5 640 character special file"
    assert lines[1] == "1 3 666 character special file"


def test_masked_and_readonly_paths(runtime, bundle_factory, config):
    config["process"]["args"] = ["sh", "-c", "cat /proc/kcore | wc -c; "
                                 "echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo rw "
                                 "|| echo ro"]
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    assert out.split() == ["0", "ro"]


def test_capabilities_applied(runtime, bundle_factory, config):
    caps = ["CAP_CHOWN", "CAP_NET_RAW"]
    config["process"]["capabilities"] = {k: caps for k in
                                         ("bounding", "effective", "permitted", "ambient",
                                          "inheritable")}
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29, 100]}
    config["process"]["args"] = ["sh", "-c", "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; "
                                 "id -G"]
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b)
    assert code == 0, err
    want = f"{(1 << 0) | (1 << 13):016x}"
    for line in out.splitlines()[:3]:
        assert line.split()[1] == want, out
    assert out.splitlines()[3].split() == ["1000", "29", "100"]


def test_session_keyring(runtime, bundle_factory, config):
    config["process"]["args"] = ["cat", "/proc/self/stat"]
    b = bundle_factory(config)
    # busybox has no keyctl: read the keyring the process is in through /proc/keys instead
    config["process"]["args"] = ["sh", "-c", "grep -c _ses /proc/keys || true"]
    config["linux"]["maskedPaths"].remove("/proc/keys")
    b = bundle_factory(config)
    code, out, err = run_out(runtime, b, "k1")
    assert code == 0, err
    assert int(out.split()[0]) >= 1
    r = runtime("run", "--no-new-keyring", "k2", cwd=b)
    assert r.returncode == 0, r.stderr


def test_session_keyring_named_after_container(pyoci, bundle_factory, config):
    config["linux"]["maskedPaths"].remove("/proc/keys")
    config["process"]["args"] = ["sh", "-c", "cat /proc/keys"]
    b = bundle_factory(config)
    code, out, err = run_out(pyoci, b, "keyring-test")
    assert code == 0, err
    assert "keyring-test" in out


def test_memory_policy(pyoci, bundle_factory, config):
    config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "0",
                                       "flags": ["MPOL_F_STATIC_NODES"]}
    config["process"]["args"] = ["sh", "-c", "grep -m1 -o 'bind=static:0' /proc/self/numa_maps"
                                 " || grep -m1 -o 'bind' /proc/self/numa_maps"]
    b = bundle_factory(config)
    code, out, err = run_out(pyoci, b)
    if code != 0 and "numa_maps" in err:
        pytest.skip("kernel without NUMA: /proc/self/numa_maps is missing")
    assert code == 0, err
    assert "bind" in out


def test_memory_policy_rejects_bad_mode(pyoci, bundle_factory, config):
    config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": ""}
    b = bundle_factory(config)
    r = pyoci("create", "-b", b, "m")
    assert r.returncode == 1 and "memoryPolicy" in r.stderr


@pytest.fixture
def dummy_link():
    name = f"pyd{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                   check=True)
    subprocess.run(["ip", "addr", "add", "10.213.7.2/24", "dev", name], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_net_devices_moved_with_addresses(pyoci, bundle_factory, config, dummy_link):
    config["linux"]["netDevices"] = {dummy_link: {"name": "ctr0"}}
    config["process"]["args"] = ["sh", "-c", "ip -o addr show dev ctr0; ip -o link show ctr0"]
    b = bundle_factory(config)
    code, out, err = run_out(pyoci, b)
    assert code == 0, err
    assert "10.213.7.2/24" in out and "ctr0" in out
    # the container's network namespace is gone: a veth goes with it
    r = subprocess.run(["ip", "link", "show", dummy_link], capture_output=True)
    assert r.returncode != 0
