"""Rootless containers: an unprivileged user, created by this module (and removed after it,
with its /etc/subuid and /etc/subgid entries), runs pyoci and runc side by side on the same
bundles: the default --root under $XDG_RUNTIME_DIR, the lifecycle commands, `run`, id
mappings (its own id without helpers, several ranges through newuidmap/newgidmap), runc's
rootless cgroup rules on a host whose cgroups it cannot write, and podman (rootless, vfs
storage, an image imported offline) with --runtime pyoci and runc."""

from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from support.harness import IS_ROOT, PYOCI, REPO, reap_zombies
from support.rootfs import build_rootfs

RUNC = shutil.which("runc")
pytestmark = pytest.mark.skipif(
    not IS_ROOT or not RUNC or not shutil.which("newuidmap") or not shutil.which("useradd")
    or not os.path.exists("/proc/self/ns/user"),
    reason="needs root (to create the test user), runc, newuidmap (package uidmap), useradd")

SUB_START, SUB_SIZE = 1_500_000_000, 65536     # the test user's /etc/subuid, /etc/subgid


class User:
    def __init__(self, name: str, home: str):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, home
        self.xdg = os.path.join(home, "run")
        os.makedirs(self.xdg, mode=0o700)
        os.chown(self.xdg, self.uid, self.gid)

    def env(self, xdg: bool = True, **extra: str) -> dict:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": self.home, "USER": self.name, "LOGNAME": self.name}
        if xdg:
            env["XDG_RUNTIME_DIR"] = self.xdg
        env.update(extra)
        return env

    def run(self, argv: list[str], *, env: dict | None = None, cwd: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """argv as the user; output through files (a container may inherit our stdio)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               env=env if env is not None else self.env(), cwd=cwd or "/",
                               user=self.uid, group=self.gid, extra_groups=[],
                               timeout=timeout)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(argv, p.returncode,
                                            out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        reap_zombies()
        return r

    def pids(self) -> list[int]:
        """Every process running as the user: all of them were started by this module."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[2]) == self.uid:
                                out.append(int(p))
                            break
            except (OSError, ValueError):
                pass
        return out


def _edit_subids(path: str, name: str, add: bool) -> None:
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith(name + ":")]
    if add:
        lines.append(f"{name}:{SUB_START}:{SUB_SIZE}")
    with open(path, "w") as f:
        f.write("".join(ln + "\n" for ln in lines))


@pytest.fixture(scope="module")
def user():
    name = f"pyocirl{os.getpid() % 100000}"
    home = tempfile.mkdtemp(prefix="pyoci-rootless-", dir="/tmp")
    os.chmod(home, 0o755)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh",
                    "--user-group", name], check=True, capture_output=True)
    try:
        for path in ("/etc/subuid", "/etc/subgid"):
            _edit_subids(path, name, add=True)
        u = User(name, home)
        os.chown(home, u.uid, u.gid)
        r = u.run([PYOCI, "--version"])
        if r.returncode != 0:
            pytest.skip(f"the test user cannot run {PYOCI} ({r.stderr.strip()[:200]}): the "
                        "repository, its .venv and every directory above them must be "
                        "readable and searchable by other users")
        yield u
    finally:
        u = locals().get("u")
        if u is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in u.pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                for _ in range(100):
                    reap_zombies()
                    if not u.pids():
                        break
                    time.sleep(0.05)
        subprocess.run(["userdel", name], capture_output=True)
        for path in ("/etc/subuid", "/etc/subgid"):
            _edit_subids(path, name, add=False)
        # rootless podman's storage holds files of the user's subordinate ids
        subprocess.run(["rm", "-rf", "--one-file-system", home], capture_output=True)


@pytest.fixture(scope="module")
def rootfs(user):
    return build_rootfs(os.path.join(user.home, "rootfs"))


BINARIES = {"pyoci": PYOCI, "runc": RUNC}


def rt(user: User, name: str, *args: str, root: str | None = None, **kw):
    argv = [BINARIES[name]] + (["--root", root] if root else []) + list(args)
    return user.run(argv, **kw)


@pytest.fixture
def bundle(user, rootfs, request):
    """A rootless bundle (the user's `pyoci spec --rootless`), written by the test; the
    runtimes' default roots under $XDG_RUNTIME_DIR are emptied afterwards."""
    d = tempfile.mkdtemp(prefix="b-", dir=user.home)
    os.chmod(d, 0o755)

    def write(args: list[str], edit=None) -> str:
        cfg = _spec(user)
        cfg["root"]["path"] = rootfs           # shared by every bundle (read-only)
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        if edit:
            edit(cfg)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        return d

    yield write
    for name in BINARIES:
        root = os.path.join(user.xdg, name)
        if os.path.isdir(root):
            for cid in os.listdir(root):
                rt(user, name, "delete", "--force", cid)
    shutil.rmtree(d, ignore_errors=True)


_spec_cache: dict = {}


def _spec(user: User) -> dict:
    """The user's `pyoci spec --rootless` (made once)."""
    if "spec" not in _spec_cache:
        d = tempfile.mkdtemp(dir=user.home)
        os.chmod(d, 0o777)
        r = rt(user, "pyoci", "spec", "--rootless", "-b", d)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(d, "config.json")) as f:
            _spec_cache["spec"] = json.load(f)
        shutil.rmtree(d)
    return copy.deepcopy(_spec_cache["spec"])


def _leftovers(user: User, name: str) -> list[str]:
    root = os.path.join(user.xdg, name)
    return os.listdir(root) if os.path.isdir(root) else []


# --- spec and the default root -------------------------------------------------------------

def test_spec_rootless_is_runcs(user, tmp_path):
    """`spec --rootless` run by the user equals runc's, but for the departures the plain
    `spec` has too (ociVersion, hostname, no ambient set, a cgroup namespace)."""
    docs = {}
    for name in BINARIES:
        d = tempfile.mkdtemp(dir=user.home)
        os.chmod(d, 0o777)
        r = rt(user, name, "spec", "--rootless", "-b", d)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(d, "config.json")) as f:
            docs[name] = json.load(f)
        shutil.rmtree(d)
    p, r = docs["pyoci"], docs["runc"]
    assert p["linux"]["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
    assert p["linux"]["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    for doc in (p, r):
        doc.pop("ociVersion")
        doc.pop("hostname")
    r["process"]["capabilities"].pop("ambient")
    p["linux"]["namespaces"].remove({"type": "cgroup"})
    assert p == r
    assert list(p["linux"]) == list(r["linux"])          # same key order as runc's file


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_default_root_under_xdg_runtime_dir(user, bundle, name):
    b = bundle(["sleep", "100"])
    r = rt(user, name, "create", "c1", cwd=b)
    assert r.returncode == 0, r.stderr
    root = os.path.join(user.xdg, name)
    st = os.stat(root)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o1700)
    assert rt(user, name, "list", "-q").stdout.split() == ["c1"]
    assert json.loads(rt(user, name, "state", "c1").stdout)["status"] == "created"
    assert rt(user, name, "delete", "--force", "c1").returncode == 0
    assert _leftovers(user, name) == []


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_without_xdg_runtime_dir_the_root_is_the_system_one(user, bundle, name):
    b = bundle(["true"])
    r = rt(user, name, "run", "c1", cwd=b, env=user.env(xdg=False))
    assert r.returncode == 1
    assert f"/run/{name}" in r.stderr and "ermission denied" in r.stderr, r.stderr


# --- the lifecycle, side by side -----------------------------------------------------------

def _lifecycle(user, name: str, b: str) -> dict:
    seen = {}
    r = rt(user, name, "create", "c1", cwd=b)
    assert r.returncode == 0, r.stderr
    st = json.loads(rt(user, name, "state", "c1").stdout)
    seen["created"] = st["status"]
    pid = st["pid"]
    with open(f"/proc/{pid}/status") as f:
        seen["host uid"] = [ln.split()[1] for ln in f if ln.startswith("Uid:")][0]
    assert rt(user, name, "start", "c1").returncode == 0
    seen["started"] = json.loads(rt(user, name, "state", "c1").stdout)["status"]
    r = rt(user, name, "exec", "c1", "sh", "-c",
           "id; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; "
           '[ "$(readlink /proc/1/ns/user)" = "$(readlink /proc/self/ns/user)" ] && echo same')
    assert r.returncode == 0, r.stderr
    seen["exec"] = r.stdout.split()
    seen["own userns"] = os.readlink(f"/proc/{pid}/ns/user") != os.readlink(
        "/proc/self/ns/user")
    assert rt(user, name, "kill", "c1", "KILL").returncode == 0
    for _ in range(200):
        reap_zombies()
        status = json.loads(rt(user, name, "state", "c1").stdout)["status"]
        if status == "stopped":
            break
        time.sleep(0.05)
    seen["killed"] = status
    r = rt(user, name, "delete", "c1")
    assert r.returncode == 0, r.stderr
    seen["after delete"] = rt(user, name, "state", "c1").returncode
    seen["leftovers"] = _leftovers(user, name)
    return seen


def test_lifecycle_as_runc(user, bundle):
    b = bundle(["sleep", "100"])
    got = {name: _lifecycle(user, name, b) for name in BINARIES}
    assert got["pyoci"] == got["runc"]
    p = got["pyoci"]
    assert (p["created"], p["started"], p["killed"]) == ("created", "running", "stopped")
    assert p["host uid"] == str(user.uid) and p["own userns"]
    assert p["exec"] == ["uid=0(root)", "gid=0(root)", "0", str(user.uid), "1",
                         "0", str(user.gid), "1", "deny", "same"]


def _run_both(user, b: str, cid: str = "r1") -> dict:
    out = {}
    for name in BINARIES:
        r = rt(user, name, "run", cid, cwd=b)
        out[name] = (r.returncode, r.stdout)
        if name == "pyoci":
            out["pyoci-stderr"] = r.stderr
        assert _leftovers(user, name) == []
    return out


def test_run_as_runc(user, bundle):
    b = bundle(["sh", "-c", "id; cat /proc/self/uid_map /proc/self/gid_map "
                "/proc/self/setgroups; hostname; ls /dev; "
                "grep -c ' / / ' /proc/self/mountinfo; exit 3"])
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"], out["pyoci-stderr"]
    assert out["pyoci"][0] == 3 and f"0 {user.uid} 1" in " ".join(out["pyoci"][1].split())


def _multi(user, edit_user=None):
    def edit(cfg):
        for key, host in (("uidMappings", user.uid), ("gidMappings", user.gid)):
            cfg["linux"][key] = [{"containerID": 0, "hostID": host, "size": 1},
                                 {"containerID": 1, "hostID": SUB_START, "size": SUB_SIZE}]
        if edit_user:
            edit_user(cfg)
    return edit


def test_several_ranges_through_newuidmap(user, bundle):
    b = bundle(["sh", "-c", "id; cat /proc/self/uid_map /proc/self/gid_map "
                "/proc/self/setgroups; ls -ln /etc/passwd"], _multi(user))
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"], out["pyoci-stderr"]
    words = out["pyoci"][1].split()
    assert words[2:8] == ["0", str(user.uid), "1", "1", str(SUB_START), str(SUB_SIZE)]
    assert "allow" in words                   # newgidmap: setgroups stays allowed


def test_several_ranges_process_user(user, bundle):
    def as_1000(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    b = bundle(["sh", "-c", "id; touch /tmp/x 2>&1; echo $HOME"], _multi(user, as_1000))
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"], out["pyoci-stderr"]
    assert out["pyoci"][1].startswith("uid=1000(user) gid=1000(user)")


def test_range_outside_subuid_is_refused(user, bundle):
    def outside(cfg):
        cfg["linux"]["uidMappings"][1]["hostID"] = SUB_START + SUB_SIZE
    b = bundle(["true"], _multi(user, outside))
    for name in BINARIES:
        r = rt(user, name, "run", "r1", cwd=b)
        assert r.returncode != 0
        assert _leftovers(user, name) == []
        if name == "pyoci":
            assert r.returncode == 1
            line = [ln for ln in r.stderr.splitlines() if "uidMappings" in ln]
            assert line and "newuidmap" in line[0] and "not allowed" in line[0], r.stderr
            assert user.pids() == []              # (runc's children may still be exiting)


def test_additional_gids_refused(user, bundle):
    def groups(cfg):
        cfg["process"]["user"]["additionalGids"] = [5]
    b = bundle(["id"], _multi(user, groups))
    for name in BINARIES:
        r = rt(user, name, "run", "r1", cwd=b)
        assert r.returncode == 1, (name, r.stdout)
        assert _leftovers(user, name) == []
        if name == "pyoci":
            assert "additionalGids" in r.stderr and "rootless" in r.stderr, r.stderr


def test_host_device_is_bind_mounted(user, bundle):
    """linux.devices in a user namespace: the host's node bind-mounted (no mknod)."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host")

    def dev(cfg):
        cfg["linux"]["devices"] = [{"path": "/dev/net/tun", "type": "c", "major": 10,
                                    "minor": 200, "fileMode": 0o666, "uid": 0, "gid": 0}]
    b = bundle(["sh", "-c", "ls -ln /dev/net/tun | cut -c1-10; "
                "grep -c /dev/net/tun /proc/self/mountinfo"], dev)
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"], out["pyoci-stderr"]
    mode = stat.filemode(os.stat("/dev/net/tun").st_mode)
    assert out["pyoci"][1].split() == [mode, "1"]          # the host's node itself


# --- cgroups on a host whose cgroup tree the user cannot write -------------------------------

def _cgroup_tree_writable(user) -> bool:
    r = user.run([sys.executable, "-c", "import os,sys; "
                  "sys.exit(0 if os.access('/sys/fs/cgroup/pids', os.W_OK) or "
                  "os.access('/sys/fs/cgroup/cgroup.procs', os.W_OK) else 1)"])
    return r.returncode == 0


def test_no_cgroup_without_limits_runs(user, bundle):
    """No cgroupsPath, no limits (devices rules only): the container runs in the caller's
    cgroup, with a warning from pyoci; runc runs it too (silently)."""
    if _cgroup_tree_writable(user):
        pytest.skip("the user may write the cgroup tree here")

    def devices(cfg):
        cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    b = bundle(["sh", "-c", "echo ok"], devices)
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"] == (0, "ok\n")
    assert "warning" in out["pyoci-stderr"] and "cgroup" in out["pyoci-stderr"]


@pytest.mark.parametrize("what", ["memory", "pids", "cgroupsPath"])
def test_cgroup_demands_fail(user, bundle, what):
    """A limit, or a named cgroupsPath, that the user cannot have: both fail, nothing left."""
    if _cgroup_tree_writable(user):
        pytest.skip("the user may write the cgroup tree here")

    def edit(cfg):
        if what == "memory":
            cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
        elif what == "pids":
            cfg["linux"]["resources"] = {"pids": {"limit": 50}}
        else:
            cfg["linux"]["cgroupsPath"] = "/pyoci-rootless-test"
    b = bundle(["true"], edit)
    for name in BINARIES:
        r = rt(user, name, "run", "r1", cwd=b)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert _leftovers(user, name) == []
        if name == "pyoci":
            last = r.stderr.strip().splitlines()[-1]
            field = "cgroupsPath" if what == "cgroupsPath" else f"resources.{what}"
            assert field in last and "ermission denied" in last, last
            assert user.pids() == []
    assert not os.path.exists("/sys/fs/cgroup/pids/pyoci-rootless-test")


# --- podman, rootless ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def podman_env(user):
    if not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("needs podman and conmon")
    wd = os.path.join(user.home, "podman")
    os.makedirs(wd)
    with open(os.path.join(wd, "containers.conf"), "w") as f:
        f.write(f"""[containers]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{wd}/events.log"
runtime_supports_json = ["crun", "runc", "pyoci"]

[engine.runtimes]
pyoci = ["{PYOCI}"]
runc = ["{RUNC}"]
""")
    with open(os.path.join(wd, "storage.conf"), "w") as f:
        f.write(f"""[storage]
driver = "vfs"
graphroot = "{wd}/storage"
runroot = "{user.xdg}/containers"
""")
    image = os.path.join(wd, "busybox.tar")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "clients", "image.py"),
                    image, "localhost/busybox:test"], check=True, capture_output=True)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", wd], check=True)
    env = user.env(CONTAINERS_CONF=os.path.join(wd, "containers.conf"),
                   CONTAINERS_STORAGE_CONF=os.path.join(wd, "storage.conf"),
                   XDG_CONFIG_HOME=os.path.join(wd, "config"),
                   XDG_DATA_HOME=os.path.join(wd, "data"))
    r = user.run(["podman", "load", "-i", image], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    yield env
    user.run(["podman", "rm", "--all", "--force", "--time", "0"], env=env, timeout=120)
    user.run(["podman", "system", "reset", "--force"], env=env, timeout=120)


def _pm(user, env, *args, timeout=120):
    return user.run(["podman", *args], env=env, timeout=timeout)


TRAP = 'trap "exit 7" TERM; echo started; while :; do sleep 0.1; done'


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_podman_rootless(user, podman_env, name):
    env, runtime = podman_env, BINARIES[name]
    r = _pm(user, env, "run", "--rm", "--network", "none", "--runtime", runtime,
            "localhost/busybox:test", "sh", "-c", "id -u; cat /proc/self/uid_map; exit 3")
    assert r.returncode == 3, r.stderr
    words = r.stdout.split()
    assert words[0] == "0" and words[1:4] == ["0", str(user.uid), "1"], r.stdout
    cname = f"rl-{name}"
    r = _pm(user, env, "run", "-d", "--name", cname, "--network", "none", "--runtime",
            runtime, "localhost/busybox:test", "sh", "-c", TRAP)
    assert r.returncode == 0, r.stderr
    try:
        for _ in range(400):
            if "started" in _pm(user, env, "logs", cname).stdout:
                break
            time.sleep(0.05)
        r = _pm(user, env, "inspect", "--format", "{{.OCIRuntime}} {{.State.Status}}", cname)
        assert r.stdout.split() == [runtime, "running"], r.stderr
        r = _pm(user, env, "exec", cname, "sh", "-c", "echo in; id -u; ps -o comm | sort")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[:2] == ["in", "0"] and "sleep" in r.stdout.split()
        r = _pm(user, env, "stop", "-t", "30", cname)
        assert r.returncode == 0, r.stderr
        r = _pm(user, env, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                cname)
        assert r.stdout.split() == ["exited", "7"]
    finally:
        _pm(user, env, "rm", "--force", "--time", "0", cname)
    assert _leftovers(user, name) == []


def test_namespaced_sysctls(user, bundle):
    """linux.sysctl of the container's own ipc and network namespaces: written by both."""
    def sysctl(cfg):
        cfg["linux"]["sysctl"] = {"kernel.msgmax": "9000", "net.ipv4.ip_forward": "1"}
        cfg["linux"]["namespaces"].append({"type": "network"})
    b = bundle(["cat", "/proc/sys/kernel/msgmax", "/proc/sys/net/ipv4/ip_forward"], sysctl)
    out = _run_both(user, b)
    assert out["pyoci"] == out["runc"] == (0, "9000\n1\n"), out["pyoci-stderr"]


def test_cgroup_commands_without_a_cgroup(user, bundle):
    """pause/update/events of a container that runs without a cgroup of its own: a one-line
    error saying what it needs (runc fails too); kill --all still signals it."""
    if _cgroup_tree_writable(user):
        pytest.skip("the user may write the cgroup tree here")
    b = bundle(["sleep", "100"])
    assert rt(user, "pyoci", "run", "-d", "c1", cwd=b).returncode == 0
    for args in (["pause", "c1"], ["update", "--memory", "100m", "c1"],
                 ["events", "--stats", "c1"]):
        r = rt(user, "pyoci", *args)
        assert r.returncode == 1 and r.stdout == "", r
        assert len(r.stderr.splitlines()) == 1 and "no cgroup" in r.stderr \
            and "root" in r.stderr, r.stderr
        assert rt(user, "runc", *args).returncode != 0 or args[0] == "events"
    assert rt(user, "pyoci", "kill", "--all", "c1", "KILL").returncode == 0
    for _ in range(200):
        reap_zombies()
        if json.loads(rt(user, "pyoci", "state", "c1").stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    assert rt(user, "pyoci", "delete", "c1").returncode == 0
