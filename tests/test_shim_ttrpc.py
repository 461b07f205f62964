"""The shim's protocol pieces without containerd: ttrpc framing and the server's answers,
the messages' wire compatibility with containerd's field numbers, the committed descriptor
set against protoc, the stats mapping and the command's flags."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading

import pytest

from pyoci.shim import main as shim_main
from pyoci.shim import pb, stats, ttrpc
from support.harness import REPO


# --- framing --------------------------------------------------------------------------

def test_frame_header_layout():
    frame = ttrpc.encode_frame(7, ttrpc.TYPE_RESPONSE, b"abc", flags=1)
    assert frame == struct.pack(">IIBB", 3, 7, 2, 1) + b"abc"
    assert frame[:10] == b"\x00\x00\x00\x03\x00\x00\x00\x07\x02\x01"


def test_read_frame_whole_split_and_end():
    a, b = socket.socketpair()
    with a, b:
        data = ttrpc.encode_frame(1, 1, b"x" * 1000) + ttrpc.encode_frame(3, 1, b"")
        for i in range(0, len(data), 7):        # arrives in small pieces
            a.sendall(data[i:i + 7])
        a.shutdown(socket.SHUT_WR)
        assert ttrpc.read_frame(b) == (1, 1, 0, b"x" * 1000)
        assert ttrpc.read_frame(b) == (3, 1, 0, b"")
        assert ttrpc.read_frame(b) is None


def test_read_frame_truncated_is_an_error():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">IIBB", 10, 1, 1, 0) + b"short")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ttrpc.FrameError):
            ttrpc.read_frame(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x00\x00\x00")              # a partial header
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ttrpc.FrameError):
            ttrpc.read_frame(b)


def test_oversized_frame_is_skipped():
    a, b = socket.socketpair()
    with a, b:
        big = ttrpc.MAX_MESSAGE + 1
        t = threading.Thread(target=lambda: (a.sendall(struct.pack(">IIBB", big, 5, 1, 0)),
                                             a.sendall(b"\0" * big),
                                             a.sendall(ttrpc.encode_frame(7, 1, b"ok"))))
        t.start()
        assert ttrpc.read_frame(b) == (5, 1, 0, None)
        assert ttrpc.read_frame(b) == (7, 1, 0, b"ok")
        t.join()


def test_encode_refuses_oversized_payload():
    with pytest.raises(ttrpc.TtrpcError) as e:
        ttrpc.encode_frame(1, 1, b"\0" * (ttrpc.MAX_MESSAGE + 1))
    assert e.value.code == ttrpc.RESOURCE_EXHAUSTED


# --- the server ---------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    release = threading.Event()

    def echo(req):
        return pb.StateResponse(id=req.id, exec_id=req.exec_id, status=pb.RUNNING)

    def blocking(req):
        release.wait(30)
        return pb.WaitResponse(exit_status=7)

    def refuse(req):
        raise ttrpc.TtrpcError(ttrpc.NOT_FOUND, f"container {req.id}: not found")

    def crash(req):
        raise RuntimeError("boom")

    methods = {("svc", "State"): (pb.StateRequest, echo),
               ("svc", "Wait"): (pb.WaitRequest, blocking),
               ("svc", "Refuse"): (pb.StateRequest, refuse),
               ("svc", "Crash"): (pb.StateRequest, crash)}
    path = str(tmp_path / "s.sock")
    srv = ttrpc.Server(ttrpc.listen(path), methods)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield path, release
    release.set()
    srv.close()


def test_call_and_errors(server):
    path, _ = server
    c = ttrpc.Client(path)
    try:
        r = c.call("svc", "State", pb.StateRequest(id="c1", exec_id="e"), pb.StateResponse)
        assert (r.id, r.exec_id, r.status) == ("c1", "e", pb.RUNNING)
        cases = [("svc", "Refuse", ttrpc.NOT_FOUND, "container c2: not found"),
                 ("svc", "Crash", ttrpc.UNKNOWN, "Crash: RuntimeError: boom"),
                 ("svc", "Nope", ttrpc.UNIMPLEMENTED, "method Nope: not implemented"),
                 ("other", "State", ttrpc.UNIMPLEMENTED, "service other: not implemented")]
        for service, method, code, message in cases:
            with pytest.raises(ttrpc.TtrpcError) as e:
                c.call(service, method, pb.StateRequest(id="c2"), pb.StateResponse)
            assert (e.value.code, e.value.message) == (code, message)
    finally:
        c.close()


def test_malformed_request_gets_invalid_argument(server):
    path, _ = server
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(ttrpc.encode_frame(1, ttrpc.TYPE_REQUEST, b"\xff\xff\xff"))
        sid, mtype, _, payload = ttrpc.read_frame(s)
        resp = pb.Response.FromString(payload)
        assert (sid, mtype, resp.status.code) == (1, ttrpc.TYPE_RESPONSE, ttrpc.INVALID_ARGUMENT)
        # a request whose own message is malformed
        req = pb.Request(service="svc", method="State", payload=b"\x0a\xff")
        s.sendall(ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, req.SerializeToString()))
        sid, _, _, payload = ttrpc.read_frame(s)
        resp = pb.Response.FromString(payload)
        assert sid == 3 and resp.status.code == ttrpc.INVALID_ARGUMENT
        assert "malformed StateRequest" in resp.status.message


def test_oversized_request_answered_and_connection_kept(server):
    path, _ = server
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(struct.pack(">IIBB", ttrpc.MAX_MESSAGE + 10, 1, 1, 0))
        s.sendall(b"\0" * (ttrpc.MAX_MESSAGE + 10))
        sid, _, _, payload = ttrpc.read_frame(s)
        assert sid == 1
        assert pb.Response.FromString(payload).status.code == ttrpc.RESOURCE_EXHAUSTED
        req = pb.Request(service="svc", method="State",
                         payload=pb.StateRequest(id="after").SerializeToString())
        s.sendall(ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, req.SerializeToString()))
        sid, _, _, payload = ttrpc.read_frame(s)
        assert sid == 3
        assert pb.StateResponse.FromString(pb.Response.FromString(payload).payload).id == "after"


def test_a_blocked_call_does_not_hold_the_connection(server):
    """containerd keeps Wait open and sends other calls on the same connection: the answers
    come back by stream id, out of order."""
    path, release = server
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        wait = pb.Request(service="svc", method="Wait", payload=b"")
        state = pb.Request(service="svc", method="State",
                           payload=pb.StateRequest(id="x").SerializeToString())
        s.sendall(ttrpc.encode_frame(1, 1, wait.SerializeToString()) +
                  ttrpc.encode_frame(3, 1, state.SerializeToString()))
        sid, _, _, payload = ttrpc.read_frame(s)
        assert sid == 3
        release.set()
        sid, _, _, payload = ttrpc.read_frame(s)
        assert sid == 1
        assert pb.WaitResponse.FromString(
            pb.Response.FromString(payload).payload).exit_status == 7


# --- messages -------------------------------------------------------------------------

def _key(field: int, wire: int) -> bytes:
    return bytes([field << 3 | wire])


def test_wire_compatibility_with_containerd_field_numbers():
    """Spot checks against containerd's .proto field numbers, encoded by hand."""
    req = pb.CreateTaskRequest(id="c", bundle="/b", terminal=True, stdout="/o",
                               rootfs=[pb.Mount(type="overlay", options=["ro"])])
    assert req.SerializeToString() == (
        _key(1, 2) + b"\x01c" + _key(2, 2) + b"\x02/b" +
        _key(3, 2) + b"\x0d" + _key(1, 2) + b"\x07overlay" + _key(4, 2) + b"\x02ro" +
        _key(4, 0) + b"\x01" + _key(6, 2) + b"\x02/o")
    exit_ = pb.TaskExit(container_id="c", id="c", pid=5, exit_status=137,
                        exited_at=pb.Timestamp(seconds=2, nanos=3))
    assert exit_.SerializeToString() == (
        _key(1, 2) + b"\x01c" + _key(2, 2) + b"\x01c" + _key(3, 0) + b"\x05" +
        _key(4, 0) + b"\x89\x01" + _key(5, 2) + b"\x04" + _key(1, 0) + b"\x02" +
        _key(2, 0) + b"\x03")
    st = pb.StateResponse(status=pb.STOPPED, exit_status=1, exec_id="e")
    assert st.SerializeToString() == _key(4, 0) + b"\x03" + _key(9, 0) + b"\x01" + \
        _key(11, 2) + b"\x01e"
    assert pb.ConnectResponse(shim_pid=1, task_pid=2).SerializeToString() == \
        _key(1, 0) + b"\x01" + _key(2, 0) + b"\x02"
    m = pb.Metrics(pids=pb.PidsStat(current=1))
    m.memory.usage.usage = 9
    usage = b"\x8a\x02" + b"\x02" + _key(2, 0) + b"\x09"      # field 33: a 2-byte key
    assert m.SerializeToString() == _key(2, 2) + b"\x02" + _key(1, 0) + b"\x01" + \
        _key(4, 2) + bytes([len(usage)]) + usage


def test_delete_action_response_is_a_delete_response():
    """`delete` encodes its DeleteResponse by hand (no protobuf import): the same bytes."""
    for status, when in ((137, 1700000000.25), (0, 1.0), (1, 0.5)):
        want = pb.DeleteResponse(exit_status=status, exited_at=pb.timestamp(when))
        assert shim_main.delete_response(status, when) == want.SerializeToString()


def test_events_carry_containerd_type_urls():
    a = pb.pack("containerd.events.TaskExit", pb.TaskExit(container_id="c"))
    assert a.type_url == "containerd.events.TaskExit"
    assert pb.TaskExit.FromString(a.value).container_id == "c"


def test_descriptor_set_is_protocs_output():
    if not shutil.which("protoc"):
        pytest.skip("protoc is not installed (Debian package protobuf-compiler)")
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "gen-shim-proto.py"),
                        "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- stats ----------------------------------------------------------------------------

def test_stats_from_pyoci_events_json():
    data = {"cpu": {"usage": {"total": 10, "percpu": [4, 6], "kernel": 3, "user": 7},
                    "throttling": {"periods": 2, "throttledPeriods": 1, "throttledTime": 5}},
            "memory": {"usage": {"limit": 100, "usage": 50, "max": 60, "failcnt": 1},
                       "swap": {"limit": 200, "usage": 55},
                       "raw": {"cache": 11, "rss": 22, "pgfault": 33, "total_rss": 44,
                               "hierarchical_memory_limit": 100}},
            "pids": {"current": 3, "limit": 9},
            "blkio": {"ioServiceBytesRecursive": [{"major": 8, "minor": 0, "op": "Read",
                                                   "value": 512}]},
            "hugetlb": {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}}
    m = stats.metrics(data)
    assert (m.cpu.usage.total, list(m.cpu.usage.per_cpu), m.cpu.usage.kernel) == (10, [4, 6], 3)
    assert m.cpu.throttling.throttled_periods == 1
    assert (m.memory.usage.limit, m.memory.usage.usage, m.memory.usage.max) == (100, 50, 60)
    assert (m.memory.cache, m.memory.rss, m.memory.pg_fault, m.memory.total_rss) == \
        (11, 22, 33, 44)
    assert m.memory.hierarchical_memory_limit == 100 and m.memory.swap.usage == 55
    assert (m.pids.current, m.pids.limit) == (3, 9)
    e = m.blkio.io_service_bytes_recursive[0]
    assert (e.major, e.op, e.value) == (8, "Read", 512)
    assert m.hugetlb[0].pagesize == "2MB"
    assert stats.metrics_any(data, v2=False).type_url == "io.containerd.cgroups.v1.Metrics"
    assert stats.metrics({}).SerializeToString() is not None   # nothing: zeros, no error


def test_stats_v2_from_pyoci_events_json():
    """pyoci's v2 stats (runc's JSON: ns, swap as memory + swap) as cgroups v2 Metrics."""
    data = {"cpu": {"usage": {"total": 5_000_000, "kernel": 1_000_000, "user": 4_000_000},
                    "throttling": {"periods": 3, "throttledPeriods": 2,
                                   "throttledTime": 7000}},
            "memory": {"cache": 9, "usage": {"limit": 1 << 20, "usage": 4096, "max": 8192},
                       "swap": {"limit": 3 << 20, "usage": 4096 + 512},
                       "raw": {"anon": 100, "file": 9, "inactive_file": 3, "pgfault": 5},
                       "event_count": {"oom": 1, "oom_kill": 1, "max": 4}},
            "pids": {"current": 2, "limit": 10},
            "blkio": {"ioServiceBytesRecursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 100},
                {"major": 8, "minor": 0, "op": "Write", "value": 200}],
                "ioServicedRecursive": [{"major": 8, "minor": 0, "op": "Read", "value": 1}]},
            "hugetlb": {"2MB": {"usage": 4, "failcnt": 0}}}
    m = stats.metrics_v2(data)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (5000, 4000, 1000)
    assert (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec) == (3, 2, 7)
    assert (m.memory.anon, m.memory.file, m.memory.inactive_file, m.memory.pgfault) == \
        (100, 9, 3, 5)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.max_usage) == (4096, 1 << 20, 8192)
    assert (m.memory.swap_usage, m.memory.swap_limit) == (512, 2 << 20)
    assert (m.memory_events.oom_kill, m.memory_events.max) == (1, 4)
    assert (m.pids.current, m.pids.limit) == (2, 10)
    assert len(m.io.usage) == 1
    e = m.io.usage[0]
    assert (e.major, e.rbytes, e.wbytes, e.rios, e.wios) == (8, 100, 200, 1, 0)
    assert m.hugetlb[0].pagesize == "2MB" and m.hugetlb[0].current == 4
    a = stats.metrics_any(data, v2=True)
    assert a.type_url == "io.containerd.cgroups.v2.Metrics"
    # containerd's field numbers: pids 1, cpu 2, memory 4, io 6, memory_events 8
    wire = pb.MetricsV2(pids=pb.PidsStat(current=1)).SerializeToString()
    assert wire == b"\x0a\x02\x08\x01"


# --- the command line -----------------------------------------------------------------

def test_go_style_flags():
    opts, rest = shim_main.parse(["-namespace", "k8s.io", "--address=/run/c.sock",
                                  "-publish-binary", "/bin/containerd", "-id", "x", "-debug",
                                  "start"])
    assert opts == {"namespace": "k8s.io", "address": "/run/c.sock",
                    "publish-binary": "/bin/containerd", "id": "x", "debug": True}
    assert rest == ["start"]
    with pytest.raises(shim_main.UsageError, match="not defined: -bogus"):
        shim_main.parse(["-bogus", "start"])
    with pytest.raises(shim_main.UsageError, match="needs an argument: -id"):
        shim_main.parse(["-id"])


def test_start_imports_no_protobuf():
    """`start` runs on every container start: it must not pay for protobuf."""
    code = ("import sys; from pyoci.shim import main; "
            "assert not [m for m in sys.modules if m.startswith('google')], sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
