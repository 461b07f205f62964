"""The container's cgroup join overlaps its setup (pyoci.ops.create._CgroupJoin, the cgroup-attach
warm-up of pyoci.warmup): whatever the timing, the init, its hooks and its cgroup namespace
must see the container's cgroup, and nothing of the warm-up may be left behind."""

from __future__ import annotations

import json
import os

import pytest

from pyoci import warmup
from support.harness import reap_zombies


def cfg_with(config: dict, args: list[str]) -> dict:
    config["process"]["args"] = args
    return config


def _host_cgroups(pid: int) -> dict[str, str]:
    out = {}
    for line in open(f"/proc/{pid}/cgroup").read().splitlines():
        _, ctrls, path = line.split(":", 2)
        out[ctrls] = path
    return out


@pytest.mark.parametrize("cgroupns", [False, True])
def test_init_is_in_its_cgroup_with_a_cgroup_mount(pyoci, bundle_factory, config, cgroupns):
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                             "source": "cgroup", "options": ["nosuid", "noexec", "nodev",
                                                             "relatime", "ro"]})
    if cgroupns:
        config["linux"]["namespaces"].append({"type": "cgroup"})
    b = bundle_factory(cfg_with(config, ["sh", "-c", "cat /proc/self/cgroup; sleep 60"]))
    out = os.path.join(b, "out")
    with open(out, "w") as f:
        pyoci("create", "--bundle", b, "c1", stdout=f, check=True)
    try:
        pid = pyoci.state("c1")["pid"]
        host = _host_cgroups(pid)
        # every hierarchy of the host: the init is in the container's cgroup (named after it)
        for ctrls, path in host.items():
            assert path.rstrip("/").endswith("/c1"), (ctrls, path)
        pyoci("start", "c1", check=True)
        for _ in range(200):
            text = open(out).read()
            if text.count("\n") >= len(host):
                break
            import time

            time.sleep(0.05)
        inside = dict(line.split(":", 2)[1:] for line in text.splitlines())
        for ctrls, path in inside.items():
            if cgroupns:
                assert path == "/", (ctrls, path)       # the namespace is rooted at c1
            else:
                assert path == host[ctrls], (ctrls, path)
    finally:
        pyoci("delete", "--force", "c1")


def test_create_container_hook_runs_in_the_cgroup(pyoci, bundle_factory, config, tmp_path):
    out = tmp_path / "hook.out"
    config["hooks"] = {"createContainer": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"cat /proc/self/cgroup > {out}"]}]}
    # createContainer hooks run in the container's mount namespace before pivot_root:
    # the host's paths are still visible there
    b = bundle_factory(config)
    pyoci("create", "--bundle", b, "c1", check=True)
    try:
        text = out.read_text()
        assert text
        for line in text.splitlines():
            assert line.split(":", 2)[2].rstrip("/").endswith("/c1"), line
    finally:
        pyoci("delete", "--force", "c1")


def test_warmup_leaves_nothing(pyoci, bundle_factory, config):
    base = warmup._cgroup2_dir()            # where the warm-up makes its scratch cgroups
    if base is None:
        pytest.skip("no cgroup2 mount")
    before = set(os.listdir(base))
    b = bundle_factory(cfg_with(config, ["true"]))
    for i in range(3):
        r = pyoci("run", "--bundle", b, f"w{i}")
        assert r.returncode == 0, r.stderr
    r = pyoci("create", "--bundle", b, "w9")
    assert r.returncode == 0, r.stderr
    pyoci("delete", "--force", "w9", check=True)
    # a failing create (bad config) warms up too and must clean up as well
    bad = bundle_factory(json.loads(json.dumps({**config, "ociVersion": "9.0.0"})))
    assert pyoci("create", "--bundle", bad, "w10").returncode == 1
    reap_zombies()
    after = set(os.listdir(base))
    assert not [d for d in after - before if d.startswith("pyoci-warmup")], after - before
    # no placeholder survives as a child of ours (the test is a subreaper: a leaked one,
    # a fork of the pyoci command, would be reparented here)
    assert not _pyoci_children(), _pyoci_children()


def _pyoci_children() -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == os.getpid() and comm.startswith("pyoci"):
            out.append(int(name))
    return out


def _proc_state(pid: int) -> str:
    """The one-letter state of pid ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _poll(cond, what: str, deadline: float = 120) -> None:
    import time

    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, f"never {what}"
        time.sleep(0.01)


def test_init_error_is_reported_when_the_cgroup_word_was_unread(pyoci, bundle_factory,
                                                                   config):
    """The runtime tells the init it is in its cgroup ("cgroup", read by the init after its
    mounts) while the init sets up the rootfs. An init that fails there closes its end with
    that word unread, and SOCK_SEQPACKET then reports ECONNRESET to the runtime *before*
    the init's error report: create said "Connection reset by peer" instead of the cause
    (seen with the runtime-tools suite's linux_cgroups_memory on a busy machine). Here
    create is stopped right after sending "cgroup" (fault point create:cgroup-sent:stop)
    until its init has failed at a mount of an unknown filesystem type."""
    import signal
    import subprocess

    from pyoci import state as st_mod

    config["linux"]["resources"] = {"memory": {"limit": 50593792, "swap": 50593792,
                                               "disableOOMKiller": True}}
    # mounts that take the init a while, then one that fails
    config["mounts"] += [{"destination": f"/mnt/t{i}", "type": "tmpfs", "source": "tmpfs"}
                         for i in range(100)]
    config["mounts"].append({"destination": "/mnt/x", "type": "pyocinosuchfs",
                             "source": "none"})
    b = bundle_factory(config)
    env = dict(os.environ, PYOCI_FAULT="create:cgroup-sent:stop")
    # the init may also fail before "cgroup" is sent (then the send fails, EPIPE, and the
    # error report comes plainly): a few rounds, so that the unread case is met
    for n in range(5):
        cid = f"c{n}"
        err_path = os.path.join(b, f"err{n}")
        with open(err_path, "w") as err:
            p = subprocess.Popen(pyoci.argv("create", "--bundle", b, cid), env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err)
        try:
            _poll(lambda p=p: _proc_state(p.pid) in ("T", "t", "Z", ""), "stopped")
            if _proc_state(p.pid) in ("T", "t"):
                init = st_mod.load(pyoci.root, cid).pid
                assert init > 0
                _poll(lambda init=init: _proc_state(init) in ("Z", ""), "failed: the init")
                os.kill(p.pid, signal.SIGCONT)
            p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            reap_zombies()
        text = open(err_path).read()
        assert p.returncode == 1, text
        assert "mount pyocinosuchfs on /mnt/x: No such device" in text, (n, text)
        assert "reset" not in text.lower(), (n, text)
        assert pyoci("state", cid).returncode == 1        # and nothing is left of it
