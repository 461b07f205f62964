"""checkpoint/restore with CRIU in the lane's guest (this host's kernel breaks CRIU 3.17),
pyoci side by side with runc: a counter keeps counting from where it was dumped, a restored
container has its state, cgroup and namespaces (exec works in it), --leave-running, a
pre-dump then a dump on top of it, --pid-file and a foreground restore's exit code.

The counter appends each value to /tmp/log in the rootfs: a restored counter continues the
sequence (N+1 after N) instead of starting again at 1. Containers have their own network
namespace (dumped and restored; with --empty-ns network a new, empty one). Their stdio is
/dev/null (the runtimes reopen it on the container's own /dev/null: a host file would be a
mount CRIU cannot find)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from lanekit import CGROUP_ROOT, PARENT, make_runtime, read, remove_cgroup_tree
from support.harness import reap_zombies

CRIU = shutil.which("criu") or "/usr/sbin/criu"
COUNTER = 'i=0; while [ $i -lt ${LIMIT:-100000} ]; do i=$((i+1)); echo $i >> /tmp/log; ' \
          'sleep 0.05; done; exit 3'


def _criu_ok(*feature: str) -> bool:
    if not os.path.exists(CRIU):
        return False
    argv = [CRIU, "check"] + (["--feature", feature[0]] if feature else [])
    return subprocess.run(argv, capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _criu_ok(), reason="`criu check` fails here")


@pytest.fixture(params=["runc", "pyoci"])
def rt(request):
    r = make_runtime(request.param)
    yield r
    r.cleanup()
    remove_cgroup_tree(os.path.join(CGROUP_ROOT, PARENT))


def call(rt, tmp_path, *args, check=True, timeout=300):
    """The runtime with the container's stdio on /dev/null and its own errors in a log."""
    log = tmp_path / f"{rt.name}.log"
    r = rt("--log", str(log), *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
           stderr=subprocess.DEVNULL, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{rt.name} {' '.join(args)} exited {r.returncode}: "
                             f"{log.read_text()[-2000:] if log.exists() else ''}")
    return r


def counter_bundle(bundle_factory, lane_config, limit: int | None = None) -> str:
    cfg = lane_config
    cfg["process"]["args"] = ["sh", "-c", COUNTER]
    if limit:
        cfg["process"]["env"].append(f"LIMIT={limit}")
    cfg["root"]["readonly"] = False
    return bundle_factory(cfg)


def values(bundle: str) -> list[int]:
    try:
        with open(os.path.join(bundle, "rootfs", "tmp", "log")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def wait_count(bundle: str, n: int, what: str, deadline_s: float = 120) -> list[int]:
    """Until the counter has logged at least n values (the deadline only guards a hang)."""
    end = time.monotonic() + deadline_s
    while True:
        reap_zombies()
        v = values(bundle)
        if len(v) >= n:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"{what}: the counter logged {len(v)} values, not {n}")
        time.sleep(0.05)


def contiguous(v: list[int]) -> bool:
    return v == list(range(1, len(v) + 1))


def ns(pid: int | str, t: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{t}")


def test_counter_resumes_with_state_cgroup_and_namespaces(rt, bundle_factory, lane_config,
                                                           cid, tmp_path):
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    before = wait_count(b, 5, "before the checkpoint")
    img = tmp_path / "img"
    call(rt, tmp_path, "checkpoint", "--image-path", str(img), cid)
    assert (img / "descriptors.json").exists() and (img / "dump.log").exists()
    assert rt("state", cid).returncode == 1          # checkpointed: the container is gone
    dumped = values(b)
    assert contiguous(dumped) and len(dumped) >= len(before)
    pid_file = tmp_path / "pid"
    call(rt, tmp_path, "restore", "-d", "--bundle", b, "--image-path", str(img),
         "--pid-file", str(pid_file), cid)
    st = rt.state(cid)
    assert st["status"] == "running" and int(pid_file.read_text()) == st["pid"]
    after = wait_count(b, len(dumped) + 5, "after the restore")
    assert contiguous(after), after[len(dumped) - 3:len(dumped) + 3]   # N+1 after N
    pid = st["pid"]
    assert read(f"/proc/{pid}/cgroup") == f"0::/{PARENT}/{cid}"
    for t in ("pid", "mnt", "ipc", "uts", "net"):
        assert ns(pid, t) != ns("self", t), t
    r = rt("exec", cid, "sh", "-c", "hostname; echo $$; tail -n1 /tmp/log", check=True)
    host, mypid, last = r.stdout.split()
    assert host == lane_config["hostname"] and int(mypid) > 1 and int(last) > len(dumped)
    with open(f"/proc/{pid}/status") as f:
        nspid = [ln.split()[1:] for ln in f if ln.startswith("NSpid:")][0]
    assert nspid[-1] == "1"                          # the init is PID 1 of its namespace
    call(rt, tmp_path, "delete", "--force", cid)
    assert not os.path.exists(f"{CGROUP_ROOT}/{PARENT}/{cid}")


def test_leave_running(rt, bundle_factory, lane_config, cid, tmp_path):
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the checkpoint")
    img = tmp_path / "img"
    call(rt, tmp_path, "checkpoint", "--leave-running", "--image-path", str(img), cid)
    st = rt.state(cid)
    assert st["status"] == "running"
    at_dump = len(values(b))
    wait_count(b, at_dump + 20, "still running after the checkpoint")
    call(rt, tmp_path, "delete", "--force", cid)
    last = values(b)[-1]
    call(rt, tmp_path, "restore", "-d", "--bundle", b, "--image-path", str(img), cid)
    v = wait_count(b, len(values(b)) + 5, "after the restore")
    # the restored counter goes on from the dump: the log drops back once, below `last`
    drops = [i for i in range(1, len(v)) if v[i] != v[i - 1] + 1]
    assert len(drops) == 1, drops
    first = v[drops[0]]
    assert 1 < first <= at_dump + 1 and first <= last
    assert v[drops[0]:] == list(range(first, first + len(v) - drops[0]))


def test_pre_dump_then_dump(rt, bundle_factory, lane_config, cid, tmp_path):
    if not _criu_ok("mem_dirty_track"):
        pytest.skip("CRIU: no memory dirty tracking in this kernel (pre-dump)")
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the pre-dump")
    pre, full = tmp_path / "pre", tmp_path / "full"
    call(rt, tmp_path, "checkpoint", "--pre-dump", "--image-path", str(pre), cid)
    assert rt.state(cid)["status"] == "running"      # a pre-dump leaves it running
    n = len(values(b))
    wait_count(b, n + 5, "running after the pre-dump")
    call(rt, tmp_path, "checkpoint", "--parent-path", "../pre", "--image-path", str(full),
         cid)
    assert os.readlink(full / "parent") == "../pre"
    dumped = values(b)
    call(rt, tmp_path, "restore", "-d", "--bundle", b, "--image-path", str(full), cid)
    after = wait_count(b, len(dumped) + 5, "after the restore")
    assert contiguous(after)


def test_foreground_restore_exit_code(rt, bundle_factory, lane_config, cid, tmp_path):
    b = counter_bundle(bundle_factory, lane_config, limit=60)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the checkpoint")
    img = tmp_path / "img"
    call(rt, tmp_path, "checkpoint", "--image-path", str(img), cid)
    r = call(rt, tmp_path, "restore", "--bundle", b, "--image-path", str(img), cid,
             check=False)
    assert r.returncode == 3                          # the program's `exit 3`, after 60
    assert contiguous(values(b)) and values(b)[-1] == 60
    assert rt("state", cid).returncode == 1           # deleted, as after `run`


def test_flags_pass_through(rt, bundle_factory, lane_config, cid, tmp_path):
    """runc's remaining flags, given to both commands: the counter resumes as without."""
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the checkpoint")
    img, work = tmp_path / "img", tmp_path / "work"
    flags = ["--tcp-established", "--ext-unix-sk", "--shell-job", "--file-locks",
             "--manage-cgroups-mode", "full", "--work-path", str(work)]
    call(rt, tmp_path, "checkpoint", *flags, "--image-path", str(img), cid)
    assert (work / "dump.log").exists() and not (img / "dump.log").exists()
    dumped = values(b)
    call(rt, tmp_path, "restore", "-d", *flags, "--bundle", b, "--image-path", str(img), cid)
    assert (work / "restore.log").exists()
    assert contiguous(wait_count(b, len(dumped) + 5, "after the restore"))


def test_restore_with_console_socket(rt, bundle_factory, lane_config, cid, tmp_path):
    """A terminal container: restored, its new pty master comes over --console-socket."""
    import socket

    cfg = lane_config
    cfg["process"]["terminal"] = True
    b = counter_bundle(bundle_factory, cfg)
    path = str(tmp_path / "console.sock")
    masters = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(2)
        for step in ("run", "restore"):
            if step == "run":
                call(rt, tmp_path, "run", "-d", "--console-socket", path, "--bundle", b, cid)
            else:
                wait_count(b, 5, "before the checkpoint")
                img = tmp_path / "img"
                call(rt, tmp_path, "checkpoint", "--shell-job", "--image-path", str(img),
                     cid)
                dumped = values(b)
                call(rt, tmp_path, "restore", "-d", "--shell-job", "--console-socket", path,
                     "--bundle", b, "--image-path", str(img), cid)
            conn, _ = srv.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            assert fds, step
            masters.append(fds[0])
    try:
        assert contiguous(wait_count(b, len(dumped) + 5, "after the restore"))
        # fd 2: the counter's `echo >> /tmp/log` points fd 1 at the log while it runs
        r = rt("exec", cid, "sh", "-c", "readlink /proc/1/fd/2", check=True)
        assert r.stdout.startswith("/dev/pts/"), r.stdout
    finally:
        for m in masters:
            os.close(m)


def test_empty_network_namespace(rt, bundle_factory, lane_config, cid, tmp_path):
    """--empty-ns network: the network namespace is not dumped; the restored container gets
    a new, empty one (loopback down) and goes on counting."""
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the checkpoint")
    img = tmp_path / "img"
    call(rt, tmp_path, "checkpoint", "--empty-ns", "network", "--image-path", str(img), cid)
    dumped = values(b)
    call(rt, tmp_path, "restore", "-d", "--empty-ns", "network", "--bundle", b,
         "--image-path", str(img), cid)
    pid = rt.state(cid)["pid"]
    assert ns(pid, "net") != ns("self", "net")
    r = rt("exec", cid, "cat", "/sys/class/net/lo/operstate", check=True)
    assert r.stdout.strip() == "down"
    assert contiguous(wait_count(b, len(dumped) + 5, "after the restore"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs(*paths) -> str:
    return "\n".join(p.read_text()[-3000:] for p in paths if p.exists())


def test_lazy_pages_through_page_server(rt, bundle_factory, lane_config, cid, tmp_path):
    """runc's lazy migration: `checkpoint --lazy-pages --page-server 127.0.0.1:P
    --status-fd W` dumps all but the memory and serves the pages (\\0 on W once it listens);
    `criu lazy-pages --page-server` and `restore --lazy-pages` of a second container
    (its own cgroup) fetch them; the checkpoint returns when all are fetched, and the
    counter goes on from where it was."""
    import select

    if not _criu_ok("uffd-noncoop"):
        pytest.skip("CRIU: no non-cooperative userfaultfd here (see the host test of the "
                    "failure)")
    b = counter_bundle(bundle_factory, lane_config)
    call(rt, tmp_path, "run", "-d", "--bundle", b, cid)
    wait_count(b, 5, "before the checkpoint")
    img, port = tmp_path / "img", _free_port()
    r, w = os.pipe()
    log = tmp_path / f"{rt.name}-checkpoint.log"
    dump = subprocess.Popen(rt.argv("--log", str(log), "checkpoint", "--lazy-pages",
                                    "--page-server", f"127.0.0.1:{port}", "--status-fd",
                                    str(w), "--image-path", str(img), cid),
                            pass_fds=(w,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    lazy = None
    cid2 = cid + "-r"
    try:
        ready, _, _ = select.select([r], [], [], 120)
        assert ready, "no status-ready on --status-fd"
        assert os.read(r, 1) == b"\0", _logs(log, img / "dump.log")
        assert (img / "inventory.img").exists()
        assert dump.poll() is None                       # still serving the pages
        dumped = values(b)
        assert contiguous(dumped)
        time.sleep(0.3)
        assert values(b) == dumped                       # the dumped counter is stopped
        # the restored container is a second one (the first exists until the last page
        # has gone): its own id and cgroup
        cfg = json.loads((open(os.path.join(b, "config.json"))).read())
        cfg["linux"]["cgroupsPath"] = f"/{PARENT}/{cid2}"
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        lazy = subprocess.Popen([CRIU, "lazy-pages", "--page-server", "--address",
                                 "127.0.0.1", "--port", str(port), "-D", str(img),
                                 "-o", "lazy-pages.log"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(200):                             # its socket, for the restore
            if (img / "lazy-pages.socket").exists():
                break
            time.sleep(0.05)
        call(rt, tmp_path, "restore", "-d", "--lazy-pages", "--bundle", b, "--image-path",
             str(img), cid2)
        assert dump.wait(timeout=120) == 0, _logs(log, img / "dump.log")
        assert lazy.wait(timeout=120) == 0
        assert rt("state", cid).returncode == 1          # the dumped container is gone
        st = rt.state(cid2)
        assert st["status"] == "running"
        if rt.name == "pyoci":        # runc leaves them in the dumped container's cgroup
            assert read(f"/proc/{st['pid']}/cgroup") == f"0::/{PARENT}/{cid2}"
        else:
            assert read(f"/proc/{st['pid']}/cgroup") == f"0::/{PARENT}/{cid}"
        assert contiguous(wait_count(b, len(dumped) + 5, "after the lazy restore"))
        call(rt, tmp_path, "delete", "--force", cid2)
    finally:
        os.close(r)
        for p in (dump, lazy):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        rt("delete", "--force", cid2)
