"""containerd-shim-pyoci-v2 driven directly over ttrpc, as containerd drives it: `start` in
the bundle, then Task calls on the socket it prints, with real containers; events go to a
stand-in publish binary that records them. The ctr/CRI scenarios are in
tests/clients/test_containerd_shim.py."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import pytest

from support.harness import PYOCI, needs_root, reap_zombies

pytestmark = needs_root

SHIM = os.path.join(os.path.dirname(PYOCI), "containerd-shim-pyoci-v2")
SERVICE = "containerd.task.v2.Task"


@pytest.fixture
def shim(tmp_path, bundle_factory, config):
    from pyoci.shim import pb, ttrpc

    ns = f"t-{uuid.uuid4().hex[:8]}"
    events = tmp_path / "events"
    publish = tmp_path / "publish"
    publish.write_text(f'#!/bin/sh\necho "$*" >> "{events}"\ncat > /dev/null\n')
    publish.chmod(0o755)
    started = []

    def start(cid: str, args: list[str], **extra) -> tuple:
        import copy
        cfg = copy.deepcopy(config)
        cfg["process"]["args"] = args
        cfg["process"]["terminal"] = False
        cfg["annotations"] = dict(extra.get("annotations", {}))
        bundle = bundle_factory(cfg)
        r = subprocess.run([SHIM, "-namespace", ns, "-address", "/nonexistent/containerd.sock",
                            "-publish-binary", str(publish), "-id", cid, "start"],
                           cwd=bundle, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        address = r.stdout
        assert address.startswith("unix:///") and \
            open(os.path.join(bundle, "address")).read() == address
        client = ttrpc.Client(address)
        started.append((client, cid))
        return client, bundle

    def call(client, method: str, req, resp=None):
        return client.call(SERVICE, method, req, resp or pb.Empty)

    yield start, call, events, ns
    for client, cid in started:
        try:
            call(client, "Kill", pb.KillRequest(id=cid, signal=9, all=True))
        except (ttrpc.TtrpcError, OSError):
            pass
        try:
            call(client, "Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
        except (ttrpc.TtrpcError, OSError):
            pass
        try:
            call(client, "Shutdown", pb.ShutdownRequest(id=cid, now=True))
        except (ttrpc.TtrpcError, OSError):
            pass
        client.close()
    root = f"/run/containerd/pyoci/{ns}"
    left = subprocess.run([PYOCI, "--root", root, "list", "-q"], capture_output=True,
                          text=True).stdout.split()
    for cid in left:
        subprocess.run([PYOCI, "--root", root, "delete", "--force", cid], capture_output=True)
    try:
        os.rmdir(root)
    except OSError:
        pass
    time.sleep(0.2)
    reap_zombies()
    assert not left, f"containers left behind: {left}"


def _reader(path: str, out: list) -> threading.Thread:
    def run() -> None:
        with open(path, "rb") as f:
            out.append(f.read())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_lifecycle_io_and_events(shim, tmp_path):
    from pyoci.shim import pb

    start, call, events, _ = shim
    client, bundle = start("c1", ["sh", "-c", "echo out; read x; echo got $x; exit 3"])
    stdin, stdout = str(tmp_path / "in"), str(tmp_path / "out")
    os.mkfifo(stdin)
    os.mkfifo(stdout)
    got: list = []
    reader = _reader(stdout, got)
    r = call(client, "Create", pb.CreateTaskRequest(id="c1", bundle=bundle, stdin=stdin,
                                                    stdout=stdout), pb.CreateTaskResponse)
    assert r.pid > 0
    st = call(client, "State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (st.status, st.pid, st.bundle) == (pb.CREATED, r.pid, bundle)
    conn = call(client, "Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    assert conn.task_pid == r.pid and conn.shim_pid > 0 and conn.shim_pid != os.getpid()
    call(client, "Start", pb.StartRequest(id="c1"), pb.StartResponse)
    with open(stdin, "wb") as f:
        f.write(b"hello\n")
    w = call(client, "Wait", pb.WaitRequest(id="c1"), pb.WaitResponse)
    assert w.exit_status == 3 and w.exited_at.seconds > 0
    st = call(client, "State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (st.status, st.exit_status) == (pb.STOPPED, 3)
    d = call(client, "Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    assert (d.pid, d.exit_status) == (r.pid, 3)
    reader.join(10)
    assert got == [b"out\ngot hello\n"]
    from pyoci.shim.ttrpc import NOT_FOUND, TtrpcError
    with pytest.raises(TtrpcError) as e:
        call(client, "State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert e.value.code == NOT_FOUND and "c1" in e.value.message
    for _ in range(100):
        if "/tasks/delete" in events.read_text():
            break
        time.sleep(0.05)
    topics = [line.split()[4] for line in events.read_text().splitlines()]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert all(line.split()[:4] == ["--address", "/nonexistent/containerd.sock", "publish",
                                    "--topic"] for line in events.read_text().splitlines())


def test_exec_kill_and_close_io(shim, tmp_path):
    import json

    from pyoci.shim import pb

    start, call, _, _ = shim
    client, bundle = start("c2", ["sleep", "1000"])
    call(client, "Create", pb.CreateTaskRequest(id="c2", bundle=bundle), pb.CreateTaskResponse)
    call(client, "Start", pb.StartRequest(id="c2"), pb.StartResponse)
    stdin, stdout = str(tmp_path / "ein"), str(tmp_path / "eout")
    os.mkfifo(stdin)
    os.mkfifo(stdout)
    got: list = []
    reader = _reader(stdout, got)
    spec = {"args": ["sh", "-c", "cat; echo done; exit 4"], "cwd": "/", "user": {"uid": 0,
            "gid": 0}, "env": ["PATH=/bin:/usr/bin"]}
    call(client, "Exec", pb.ExecProcessRequest(
        id="c2", exec_id="e1", stdin=stdin, stdout=stdout,
        spec=pb.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                    value=json.dumps(spec).encode())))
    s = call(client, "Start", pb.StartRequest(id="c2", exec_id="e1"), pb.StartResponse)
    assert s.pid > 0
    with open(stdin, "wb") as f:
        f.write(b"typed\n")
    time.sleep(0.3)
    # the client's end is closed, but the input ends only with CloseIO (the shim's writer)
    st = call(client, "State", pb.StateRequest(id="c2", exec_id="e1"), pb.StateResponse)
    assert st.status == pb.RUNNING
    call(client, "CloseIO", pb.CloseIORequest(id="c2", exec_id="e1", stdin=True))
    w = call(client, "Wait", pb.WaitRequest(id="c2", exec_id="e1"), pb.WaitResponse)
    assert w.exit_status == 4
    call(client, "Delete", pb.DeleteRequest(id="c2", exec_id="e1"), pb.DeleteResponse)
    reader.join(10)
    assert got == [b"typed\ndone\n"]
    pids = call(client, "Pids", pb.PidsRequest(id="c2"), pb.PidsResponse)
    assert len(pids.processes) == 1
    call(client, "Kill", pb.KillRequest(id="c2", signal=9))
    w = call(client, "Wait", pb.WaitRequest(id="c2"), pb.WaitResponse)
    assert w.exit_status == 128 + 9
    from pyoci.shim.ttrpc import NOT_FOUND, TtrpcError
    with pytest.raises(TtrpcError) as e:
        call(client, "Kill", pb.KillRequest(id="c2", signal=9))
    assert e.value.code == NOT_FOUND and "already finished" in e.value.message
    call(client, "Kill", pb.KillRequest(id="c2", signal=9, all=True))   # --all: fine


def test_errors_are_ttrpc_errors(shim):
    from pyoci.shim import pb
    from pyoci.shim.ttrpc import ALREADY_EXISTS, NOT_FOUND, TtrpcError

    start, call, _, _ = shim
    client, bundle = start("c3", ["true"])
    with pytest.raises(TtrpcError) as e:
        call(client, "Start", pb.StartRequest(id="nope"), pb.StartResponse)
    assert (e.value.code, e.value.message) == (NOT_FOUND, "container nope: not found")
    with open(os.path.join(bundle, "config.json"), "r+") as f:
        text = f.read().replace('"args"', '"args": 5, "_args"')
        f.seek(0)
        f.write(text)
    with pytest.raises(TtrpcError) as e:
        call(client, "Create", pb.CreateTaskRequest(id="c3", bundle=bundle),
             pb.CreateTaskResponse)
    assert e.value.message.startswith("pyoci create: ") and "process.args" in e.value.message
    os.rename(os.path.join(bundle, "config.json"), os.path.join(bundle, "bad.json"))
    with pytest.raises(TtrpcError) as e:
        call(client, "Create", pb.CreateTaskRequest(id="c3", bundle=bundle),
             pb.CreateTaskResponse)
    assert "config.json" in e.value.message
    # the failed creates left nothing: the id is free, in pyoci too
    r = subprocess.run([PYOCI, "--root", f"/run/containerd/pyoci/{shim[3]}", "list", "-q"],
                       capture_output=True, text=True)
    assert r.stdout == ""
    assert ALREADY_EXISTS != NOT_FOUND


def test_group_shares_one_shim(shim):
    """Containers with the same io.kubernetes.cri.sandbox-id get the same shim address."""
    start, _, _, _ = shim
    sandbox = {"io.kubernetes.cri.sandbox-id": "pod-" + uuid.uuid4().hex[:6]}
    a, _ = start("g1", ["true"], annotations=sandbox)
    b, _ = start("g2", ["true"], annotations=sandbox)
    c, _ = start("g3", ["true"])
    assert a.sock.getpeername() == b.sock.getpeername() != c.sock.getpeername()


def test_delete_action_prints_a_delete_response(tmp_path):
    from pyoci.shim import pb

    r = subprocess.run([SHIM, "-namespace", "t-del", "-address", "/x", "-id", "gone",
                        "-bundle", str(tmp_path), "delete"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    resp = pb.DeleteResponse.FromString(r.stdout)
    assert resp.exit_status == 137 and resp.exited_at.seconds > 0


@needs_root
def test_delete_action_unmounts_a_rootfs_whose_path_mountinfo_escapes(tmp_path):
    """The bundle's path may hold a space (mountinfo writes it \\040): the delete action
    still finds the rootfs mounted and unmounts it (it compared the escaped text)."""
    from pyoci.linux import mountinfo, syscalls as sc

    bundle = tmp_path / "a bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    sc.mount("tmpfs", str(rootfs), "tmpfs", 0, None)
    try:
        r = subprocess.run([SHIM, "-namespace", "t-del", "-address", "/x", "-id", "gone",
                            "-bundle", str(bundle), "delete"], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert str(rootfs) not in mountinfo.mounts_under(str(bundle)).values()
    finally:
        while str(rootfs) in mountinfo.mounts_under(str(bundle)).values():
            sc.umount2(str(rootfs), sc.MNT_DETACH)


def test_usage_errors():
    r = subprocess.run([SHIM, "-id", "x", "start"], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, "containerd-shim-pyoci-v2: shim namespace cannot "
                                           "be empty\n")
    r = subprocess.run([SHIM, "-namespace", "n", "-id", "x", "frobnicate"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unknown action 'frobnicate'" in r.stderr


def test_delete_action_cleans_up_after_a_killed_shim(shim):
    """containerd runs `delete` when a shim's connection drops: after a shim crash it must
    remove the container (its process, pyoci's state) and report SIGKILL."""
    import signal

    from pyoci.shim import pb

    start, call, _, ns = shim
    client, bundle = start("dead", ["sleep", "1000"])
    r = call(client, "Create", pb.CreateTaskRequest(id="dead", bundle=bundle),
             pb.CreateTaskResponse)
    call(client, "Start", pb.StartRequest(id="dead"), pb.StartResponse)
    with open(os.path.join(bundle, "shim.pid")) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    out = subprocess.run([SHIM, "-namespace", ns, "-address", "/x", "-id", "dead", "delete"],
                         cwd=bundle, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert pb.DeleteResponse.FromString(out.stdout).exit_status == 137
    for _ in range(100):
        reap_zombies()
        if not os.path.exists(f"/proc/{r.pid}"):
            break
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{r.pid}")
    listing = subprocess.run([PYOCI, "--root", f"/run/containerd/pyoci/{ns}", "list", "-q"],
                             capture_output=True, text=True)
    assert listing.stdout == ""
