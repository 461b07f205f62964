"""Behaviours where pyoci departed from runc (issue: found by a peer runtime's suite and by
clients): each test runs the same bundle under pyoci and runc (the `runtime` fixture) and
asserts what runc does, so both must pass."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from support.harness import reap_zombies

pytestmark = pytest.mark.integration

MAPS = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def run(rt, b: str, cid: str = "c1", *flags: str):
    return rt("run", *flags, cid, cwd=b)


def with_userns(config: dict) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = MAPS
    config["linux"]["gidMappings"] = MAPS


def open_path_to(b: str) -> None:
    """The bundle belongs to host root, unmapped in a user namespace: every directory on the
    way must be searchable by others."""
    d = b
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o005)
        d = os.path.dirname(d)


def chown_rootfs(b: str, uid: int = 100000) -> None:
    subprocess.run(["chown", "-R", "-h", f"{uid}:{uid}", os.path.join(b, "rootfs")],
                   check=True)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_zombies()
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


# --- hooks -----------------------------------------------------------------------------------

HOST_KINDS = ("prestart", "createRuntime", "poststart", "poststop")


def _env_of(path: str) -> dict[str, str]:
    with open(path) as f:
        env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    for shells_own in ("PWD", "SHLVL", "OLDPWD", "_"):
        env.pop(shells_own, None)
    return env


def test_hooks_without_env_inherit_as_runc(runtime, bundle_factory, config, tmp_path):
    """A hook without `env` gets the runtime's environment on the host side and the
    process's in the init (createContainer before HOME is set, startContainer after); an
    explicit env (even []) is the whole environment."""
    config["process"]["args"] = ["true"]
    config["process"]["env"] = ["PATH=/bin:/usr/bin", "FROM_PROCESS=1"]
    config["root"]["readonly"] = False
    out = str(tmp_path / "out")
    os.mkdir(out)
    hooks: dict[str, list] = {}
    for kind in HOST_KINDS + ("createContainer",):
        hooks[kind] = [{"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}/{kind}"]}]
    hooks["prestart"].append({"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}/given"],
                              "env": ["ONLY=this"]})
    hooks["prestart"].append({"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}/empty"],
                              "env": []})
    hooks["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", "env > /start"]}]
    config["hooks"] = hooks
    b = bundle_factory(config)
    r = runtime("run", "h1", cwd=b, env={"PATH": "/usr/bin:/bin", "FROM_RUNTIME": "yes"})
    assert r.returncode == 0, r.stderr
    for kind in HOST_KINDS:
        assert _env_of(f"{out}/{kind}") == {"PATH": "/usr/bin:/bin", "FROM_RUNTIME": "yes"}, kind
    assert _env_of(f"{out}/createContainer") == {"PATH": "/bin:/usr/bin", "FROM_PROCESS": "1"}
    assert _env_of(f"{b}/rootfs/start") == {"PATH": "/bin:/usr/bin", "FROM_PROCESS": "1",
                                            "HOME": "/root"}
    assert _env_of(f"{out}/given") == {"ONLY": "this"}
    assert _env_of(f"{out}/empty") == {}


# --- run --keep ----------------------------------------------------------------------------

def test_run_keep_keeps_the_stopped_container(runtime, bundle_factory, config):
    config["process"]["args"] = ["sh", "-c", "exit 3"]
    b = bundle_factory(config)
    assert run(runtime, b, "k1", "--keep").returncode == 3
    st = runtime.state("k1")
    assert st["status"] == "stopped" and st["bundle"] == b
    runtime("delete", "k1", check=True)
    assert runtime("state", "k1").returncode == 1
    assert run(runtime, b, "k2").returncode == 3          # without --keep: deleted
    assert runtime("state", "k2").returncode == 1


# --- process.cwd -----------------------------------------------------------------------------

def test_missing_cwd_is_created_inside_the_rootfs(runtime, bundle_factory, config):
    """runc creates a missing cwd (0755, owned by root, before root.readonly and the user
    switch); a symlink on the way is resolved inside the rootfs."""
    config["process"]["args"] = ["sh", "-c", "pwd; stat -c '%a %u' ."]
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["cwd"] = "/new/dir"
    b = bundle_factory(config)
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/new/dir", "755", "0"]
    # the symlink leads to the rootfs's /tmp, never the host's
    name = f"pyoci-cwd-{os.getpid()}-{runtime.name}"
    config["process"]["cwd"] = f"/esc/{name}"
    b = bundle_factory(config)
    os.symlink("../../../../../../../../tmp", os.path.join(b, "rootfs", "esc"))
    r = run(runtime, b, "c2")
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(os.path.join(b, "rootfs", "tmp", name))
    assert not os.path.exists(os.path.join("/tmp", name))


# --- mounts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("link", ["../run/sub/x.conf", "/abs/x.conf",
                                  "../../../../../../../../ESCAPE/x.conf"])
def test_file_mount_on_a_dangling_symlink_creates_its_target(runtime, bundle_factory, config,
                                                             tmp_path, link):
    """runc creates the (dangling) symlink's target inside the rootfs and mounts there."""
    src = tmp_path / "src"
    src.write_text("mounted\n")
    escape = str(tmp_path / "escape")
    link = link.replace("/ESCAPE", escape)
    config["process"]["args"] = ["cat", "/etc/x.conf"]
    config["mounts"].append({"destination": "/etc/x.conf", "type": "bind", "source": str(src),
                             "options": ["bind", "ro"]})
    b = bundle_factory(config)
    os.symlink(link, os.path.join(b, "rootfs", "etc", "x.conf"))
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "mounted\n"
    target = os.path.normpath(os.path.join("/etc", link))
    assert os.path.isfile(os.path.join(b, "rootfs", target.lstrip("/")))
    assert not os.path.exists(escape)


@pytest.mark.parametrize("cgroupns", [False, True], ids=["host-cgroupns", "cgroupns"])
def test_cgroup_mount_after_binding_the_hosts_sys(runtime, bundle_factory, config, cgroupns):
    """With the host's /sys rbound into the rootfs every hierarchy is seen twice in the
    init's mountinfo: each must still be mounted once (it was twice: EBUSY)."""
    config["process"]["args"] = ["sh", "-c", "ls /sys/fs/cgroup; cat /proc/self/cgroup"]
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys"]
    config["mounts"] += [
        {"destination": "/sys", "type": "bind", "source": "/sys",
         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}]
    if cgroupns:
        config["linux"]["namespaces"].append({"type": "cgroup"})
    b = bundle_factory(config)
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    ls = r.stdout.split()
    for h in ("cpu", "memory", "pids", "freezer"):
        if os.path.isdir(f"/sys/fs/cgroup/{h}"):
            assert h in ls


@pytest.mark.parametrize("dest,opts", [("/", ["rbind"]), ("/mnt/r", ["bind", "ro"])])
def test_bind_of_the_rootfs_itself_with_a_user_namespace(runtime, bundle_factory, config,
                                                         dest, opts):
    """The rootfs bound onto itself (or below itself): what is mounted after it, the
    devices bound from the host in a user namespace, lands on top of it."""
    with_userns(config)
    config["process"]["args"] = ["sh", "-c", f"test -c /dev/null && ls {dest} | grep -c etc"]
    config["mounts"].append({"destination": dest, "type": "bind", "source": "rootfs",
                             "options": opts})
    b = bundle_factory(config)
    open_path_to(b)
    chown_rootfs(b)
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1"]


# --- exec ------------------------------------------------------------------------------------

@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_exec_applies_exec_cpu_affinity(pyoci, bundle_factory, config, tmp_path):
    """As for the init (test_exec_cpu_affinity_final_pins_the_program): exec handed the
    whole process object where the affinity object was expected, and pinned nothing. (runc
    1.1 has no execCPUAffinity: pyoci only.)"""
    config["process"]["args"] = ["sleep", "1000"]
    config["process"]["execCPUAffinity"] = {"initial": "0", "final": "1"}
    b = bundle_factory(config)
    pyoci("run", "-d", "--bundle", b, "aff", check=True)
    grep = ["grep", "Cpus_allowed_list", "/proc/self/status"]
    r = pyoci("exec", "aff", *grep)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Cpus_allowed_list:", "1"]      # from the stored config
    proc = dict(config["process"], args=grep, execCPUAffinity={"final": "0"})
    (tmp_path / "p.json").write_text(json.dumps(proc))
    r = pyoci("exec", "--process", str(tmp_path / "p.json"), "aff")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Cpus_allowed_list:", "0"]


# --- a program that cannot run: runc's words, which clients match -----------------------------

WORDS = [("/nonexistent", 'exec: "/nonexistent": stat /nonexistent: no such file or directory'),
         ("/etc/passwd/x", 'exec: "/etc/passwd/x": stat /etc/passwd/x: not a directory'),
         ("nonexistent", 'exec: "nonexistent": executable file not found in $PATH'),
         ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
         ("/etc", 'exec: "/etc": permission denied')]


def test_program_that_cannot_run_is_worded_as_runc(runtime, bundle_factory, config):
    """For run (create) and exec alike (tests/clients: the exit codes podman and docker
    derive from these words)."""
    config["process"]["args"] = ["sleep", "1000"]
    b = bundle_factory(config)
    runtime("run", "-d", "--bundle", b, "w1", check=True)
    for prog, words in WORDS:
        config["process"]["args"] = [prog]
        r = run(runtime, bundle_factory(config), "w2")
        err = r.stderr.replace('\\"', '"')          # runc's log line escapes its quotes
        assert r.returncode == 1 and words in err, (prog, r.stderr)
        assert runtime("state", "w2").returncode == 1
        r = runtime("exec", "w1", prog)
        assert r.returncode != 0 and words in r.stderr.replace('\\"', '"'), (prog, r.stderr)


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_mount_on_the_root_before_the_others(runtime, bundle_factory, config, tmp_path, kind):
    """A directory bound (or a tmpfs with tmpcopyup) onto / as the first mount: proc, /dev
    and the rest are mounted on top of it, not on the rootfs it covers."""
    if kind == "bind":
        new_root = tmp_path / "newroot"
        new_root.mkdir()
        subprocess.run(["cp", "/bin/busybox", str(new_root)], check=True)
        first = {"destination": "/", "type": "bind", "source": str(new_root),
                 "options": ["bind"]}
        sh = "/busybox"
    else:
        first = {"destination": "/", "type": "tmpfs", "source": "tmpfs",
                 "options": ["tmpcopyup"]}
        sh = "/bin/busybox"
    config["mounts"].insert(0, first)
    config["process"]["args"] = [sh, "sh", "-c", f"{sh} test -c /dev/null && "
                                 f"{sh} grep -c ' /proc ' /proc/self/mountinfo && {sh} ls /"]
    b = bundle_factory(config)
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[0] == "1"
    assert ("busybox" in out) if kind == "bind" else ("etc" in out and "bin" in out)


@pytest.mark.parametrize("opts", [["bind", "ro"], ["rbind"]])
def test_bind_source_under_a_root_only_directory_with_a_user_namespace(
        runtime, bundle_factory, config, tmp_path, opts):
    """runc opens bind sources on the host side: a source under a directory only the host's
    root may search is mounted although container root is another host uid."""
    private = tmp_path / "private"
    (private / "data").mkdir(parents=True)
    (private / "data" / "f").write_text("secret\n")
    os.chmod(private, 0o700)
    with_userns(config)
    config["process"]["args"] = ["sh", "-c", "cat /data/f; touch /data/new 2>/dev/null || "
                                 "echo refused"]
    config["mounts"].append({"destination": "/data", "type": "bind",
                             "source": str(private / "data"), "options": opts})
    b = bundle_factory(config)
    open_path_to(b)
    chown_rootfs(b)
    r = run(runtime, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["secret", "refused"]
    assert not (private / "data" / "new").exists()


# --- kill --all --------------------------------------------------------------------------------

def test_kill_all_after_the_init_exited_kills_what_is_left(runtime, bundle_factory, config):
    """Without a PID namespace of its own a container's processes outlive its init: `kill
    --all` of the stopped container still signals what is left in its cgroup (runc: status
    stopped but the cgroup exists)."""
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    config["root"]["readonly"] = False
    config["process"]["args"] = ["sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & "
                                 "echo $! > /left; exit 0"]
    b = bundle_factory(config)
    runtime("run", "-d", "--bundle", b, "ka", check=True)
    left = os.path.join(b, "rootfs", "left")
    deadline = time.monotonic() + 10
    while not (os.path.exists(left) and open(left).read().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(open(left).read())
    deadline = time.monotonic() + 10
    while runtime.state("ka")["status"] != "stopped":
        assert time.monotonic() < deadline
        reap_zombies()
        time.sleep(0.02)
    assert not wait_gone(pid, 0.2), "the leftover process died on its own"
    assert runtime("kill", "--all", "ka", "KILL").returncode == 0
    assert wait_gone(pid), "kill --all left the container's process alive"
    runtime("delete", "ka", check=True)


# --- seccomp agent (listenerPath) --------------------------------------------------------------

NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101
NOTIF, NOTIF_RESP = struct.Struct("=QIIiIQ6Q"), struct.Struct("=QqiI")


class Agent:
    """A seccomp agent on a unix socket: records the number of fds each connection brought
    and answers every notified syscall (getppid) with 4242."""

    def __init__(self, path: str):
        self.path, self.nfds = path, []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(30)
                _, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            self.nfds.append(len(fds))
            for fd in fds[1:]:
                os.close(fd)
            if fds:
                threading.Thread(target=self._serve, args=(fds[0],), daemon=True).start()

    def _serve(self, fd: int) -> None:
        try:
            while not self.stop.is_set():
                if not select.select([fd], [], [], 0.2)[0]:
                    continue
                buf = bytearray(NOTIF.size)
                try:
                    fcntl.ioctl(fd, NOTIF_RECV, buf)
                    fcntl.ioctl(fd, NOTIF_SEND, bytearray(NOTIF_RESP.pack(
                        NOTIF.unpack(buf)[0], 4242, 0, 0)))
                except OSError:     # the process is gone: its filter's listener hangs up
                    return
        finally:
            os.close(fd)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.srv.close()


@pytest.fixture
def agent(tmp_path):
    a = Agent(str(tmp_path / "agent.sock"))
    yield a
    a.close()


@pytest.mark.parametrize("userns", [False, True], ids=["host-userns", "userns"])
@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_seccomp_agent_gets_one_fd_per_connection(runtime, bundle_factory, config, agent,
                                                  userns, nnp):
    """Every connection to the agent brings the listener fd, for run and exec, with and
    without a user namespace; a container or exec that fails to start never connects (a
    connection without the fd: "expected 1 FD, got 0"). runc 1.1.5 panics without
    noNewPrivileges (a nil pointer in its init): those cases are pyoci's only."""
    if runtime.name == "runc" and not nnp:
        pytest.skip("runc 1.1.5's init panics with a listener and without noNewPrivileges")
    config["process"]["noNewPrivileges"] = nnp
    config["process"]["args"] = ["sh", "-c", "echo $PPID"]
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": agent.path,
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}
    if userns:
        with_userns(config)
    b = bundle_factory(config)
    if userns:
        open_path_to(b)
        chown_rootfs(b)
    r = run(runtime, b, "s1")
    assert (r.returncode, r.stdout) == (0, "4242\n"), r.stderr
    config["process"]["args"] = ["/nonexistent"]
    b2 = bundle_factory(config)
    if userns:
        open_path_to(b2)
        chown_rootfs(b2)
    assert run(runtime, b2, "s2").returncode == 1
    config["process"]["args"] = ["sleep", "1000"]
    b3 = bundle_factory(config)
    if userns:
        open_path_to(b3)
        chown_rootfs(b3)
    runtime("run", "-d", "--bundle", b3, "s3", check=True)
    r = runtime("exec", "s3", "sh", "-c", "echo $PPID")
    assert (r.returncode, r.stdout) == (0, "4242\n"), r.stderr
    assert runtime("exec", "s3", "/nonexistent").returncode != 0
    runtime("delete", "--force", "s3", check=True)
    assert agent.nfds == [1, 1, 1], agent.nfds
