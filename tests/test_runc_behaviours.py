"""Behaviours where pyoci departed from runc (issue: found by a peer runtime's suite and by
clients): each test runs the same bundle under pyoci and runc (the `runtime` fixture) and
asserts what runc does, so both must pass."""

from __future__ import annotations

import json
import os
import subprocess
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
