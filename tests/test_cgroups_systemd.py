"""The systemd cgroup driver: D-Bus wire format (against hand-computed bytes), names, paths,
unit properties, a fake system bus that plays systemd, the "systemd is not running" errors,
and a real run marked `lane` (needs systemd as PID 1: the QEMU lane)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from pyoci.cgroups import dbus
from pyoci.cgroups import systemd as sd
from pyoci.errors import ConfigError, SysError, UnsupportedError
from support.child import idle_child


# --- marshalling -------------------------------------------------------------------------

def test_marshal_string_and_alignment():
    assert dbus.marshal("s", ["ab"]) == b"\x02\0\0\0ab\0"
    assert dbus.marshal("yu", [7, 1]) == b"\x07\0\0\0\x01\0\0\0"
    assert dbus.marshal("yt", [1, 2]) == b"\x01" + b"\0" * 7 + b"\x02" + b"\0" * 7
    assert dbus.marshal("g", ["a(sv)"]) == b"\x05a(sv)\0"
    assert dbus.marshal("b", [True]) == b"\x01\0\0\0"


def test_marshal_array_of_struct_with_variant():
    got = dbus.marshal("a(sv)", [[("A", ("b", True))]])
    want = (b"\x10\0\0\0" + b"\0" * 4 + b"\x01\0\0\0A\0" + b"\x01b\0" + b"\0" * 3
            + b"\x01\0\0\0")
    assert bytes(got) == want


def test_marshal_empty_array_still_pads_to_element_alignment():
    assert dbus.marshal("ua(sv)", [1, []]) == b"\x01\0\0\0" + b"\0\0\0\0"
    assert dbus.marshal("a(sv)", [[]]) == b"\0\0\0\0" + b"\0" * 4


def test_build_message_matches_hand_computed_bytes():
    got = dbus.build_message(dbus.METHOD_CALL, 1, {dbus.F_PATH: "/", dbus.F_MEMBER: "Hi"})
    want = (b"l\x01\x00\x01" + b"\0\0\0\0" + b"\x01\0\0\0" + b"\x1b\0\0\0"
            + b"\x01\x01o\x00" + b"\x01\0\0\0/\0" + b"\0" * 6
            + b"\x03\x01s\x00" + b"\x02\0\0\0Hi\0" + b"\0" * 5)
    assert got == want
    assert dbus.message_length(got[:16]) == len(got)


@pytest.mark.parametrize("sig,values", [
    ("s", ["héllo"]),
    ("ssa(sv)a(sa(sv))", ["x.scope", "replace",
                          [("Description", ("s", "d")), ("PIDs", ("au", [1, 2])),
                           ("Delegate", ("b", True)), ("MemoryMax", ("t", 1 << 40)),
                           ("AllowedCPUs", ("ay", b"\x0f\x01")),
                           ("Wants", ("as", ["a.slice"]))], []]),
    ("uoss", [7, "/org/freedesktop/systemd1/job/7", "a.scope", "done"]),
    ("a{sv}", [{"a": ("i", -3), "b": ("d", 1.5), "c": ("x", -(1 << 40))}]),
    ("(yq)n", [(1, 65535), -2]),
])
def test_marshal_round_trip(sig, values):
    data = bytes(dbus.marshal(sig, values))
    back, end = dbus.unmarshal(sig, data)
    assert end == len(data)
    norm = [list(v) if isinstance(v, list) else v for v in values]
    assert back == norm


def test_message_round_trip():
    body = ["u.scope", "replace", [("PIDs", ("au", [42]))], []]
    raw = dbus.build_message(dbus.METHOD_CALL, 9, {dbus.F_PATH: sd.SD_PATH,
                                                   dbus.F_MEMBER: "Start",
                                                   dbus.F_DESTINATION: sd.SD_DEST},
                             "ssa(sv)a(sa(sv))", body)
    m = dbus.parse_message(raw)
    assert m["serial"] == 9 and m["type"] == dbus.METHOD_CALL
    assert m["fields"][dbus.F_MEMBER] == "Start"
    assert m["fields"][dbus.F_SIGNATURE] == "ssa(sv)a(sa(sv))"
    assert m["body"] == body


def test_bad_signatures():
    for sig in ("(s", "a", "z", "(s}"):
        with pytest.raises(ValueError):
            dbus.split_signature(sig)
    with pytest.raises(ValueError):
        dbus.marshal("ss", ["one"])


def test_bus_address(monkeypatch):
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    assert dbus.bus_address() == "/run/dbus/system_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "tcp:host=x;unix:path=/tmp/bus,guid=1")
    assert dbus.bus_address() == "/tmp/bus"


# --- names, paths and properties ---------------------------------------------------------

def test_parse_cgroups_path_and_unit_name():
    assert sd.parse_cgroups_path("", "c1") == ("system.slice", "pyoci", "c1")
    assert sd.parse_cgroups_path("user.slice:docker:abc", "c1") == \
        ("user.slice", "docker", "abc")
    assert sd.parse_cgroups_path(":p:", "c1") == ("system.slice", "p", "c1")
    for bad in ("system.slice", "a:b", "a:b:c:d", "a/b.slice:p:n"):
        with pytest.raises(ConfigError, match="cgroupsPath"):
            sd.parse_cgroups_path(bad, "c1")
    assert sd.unit_name("docker", "abc") == "docker-abc.scope"
    assert sd.unit_name("", "abc") == "abc.scope"
    assert sd.unit_name("x", "my.slice") == "my.slice"


@pytest.mark.parametrize("name,path", [
    ("system.slice", "/system.slice"), ("-.slice", "/"),
    ("test-a-b.slice", "/test.slice/test-a.slice/test-a-b.slice")])
def test_expand_slice(name, path):
    assert sd.expand_slice(name) == path


@pytest.mark.parametrize("name", ["system", ".slice", "test--a.slice", "-test.slice",
                                  "a/b.slice", "test-.slice"])
def test_expand_slice_invalid(name):
    with pytest.raises(ConfigError):
        sd.expand_slice(name)


def test_range_to_bits():
    assert sd.range_to_bits("0-3,5") == b"\x2f"
    assert sd.range_to_bits("8") == b"\x00\x01"
    assert sd.range_to_bits(" 1 , 9-10,") == b"\x02\x06"
    for bad in ("", "3-1", "x", ","):
        with pytest.raises(ConfigError):
            sd.range_to_bits(bad)


def test_cpu_quota_properties():
    assert sd.cpu_quota_properties(0, 0, 250) == []
    assert sd.cpu_quota_properties(50000, 100000, 250) == [
        ("CPUQuotaPeriodUSec", ("t", 100000)), ("CPUQuotaPerSecUSec", ("t", 500000))]
    # fractional percents round up to the next 1% (10ms per second)
    assert sd.cpu_quota_properties(33333, 0, 250) == [("CPUQuotaPerSecUSec", ("t", 340000))]
    # unlimited quota; old systemd without CPUQuotaPeriodUSec
    assert sd.cpu_quota_properties(-1, 20000, 240) == [
        ("CPUQuotaPerSecUSec", ("t", sd.USEC_INFINITY))]


def test_resource_properties_v2():
    res = {"memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30},
           "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1",
                   "mems": "0"},
           "pids": {"limit": 100},
           "unified": {"memory.high": "max", "pids.max": "50", "io.weight": "10"}}
    props = dict(sd.resource_properties(res, 252))
    assert props["MemoryMax"] == ("t", 1 << 30)
    assert props["MemoryLow"] == ("t", 1 << 29)
    assert props["MemorySwapMax"] == ("t", 1 << 30)
    assert props["CPUWeight"] == ("t", 100)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert props["AllowedCPUs"] == ("ay", b"\x03")
    assert props["AllowedMemoryNodes"] == ("ay", b"\x01")
    assert props["MemoryHigh"] == ("t", sd.USEC_INFINITY)
    assert "io.weight" not in str(props)
    names = [n for n, _ in sd.resource_properties(res, 252)]
    assert names.count("TasksMax") == 2  # pids.limit, then unified pids.max (last wins)
    old = dict(sd.resource_properties(res, 240))
    assert "AllowedCPUs" not in old and "CPUQuotaPeriodUSec" not in old


def test_resource_properties_idle_and_v1():
    props = sd.resource_properties({"cpu": {"idle": 1, "shares": 512}}, 252)
    assert props == [("CPUWeight", ("t", 0))]
    props = sd.resource_properties({"cpu": {"idle": 1, "shares": 512}}, 251)
    assert props == [("CPUWeight", ("t", 59))]
    v1 = dict(sd.resource_properties({"memory": {"limit": 4096}, "cpu": {"shares": 512},
                                      "blockIO": {"weight": 300},
                                      "pids": {"limit": -1}}, 252, unified=False))
    assert v1 == {"MemoryLimit": ("t", 4096), "CPUShares": ("t", 512),
                  "BlockIOWeight": ("t", 300), "TasksMax": ("t", sd.USEC_INFINITY)}
    with pytest.raises(ConfigError, match="swap"):
        sd.resource_properties({"memory": {"swap": 100}}, 252)


def test_unit_properties():
    props = sd.unit_properties("pyoci container c1", "system.slice", "pyoci-c1.scope", 42,
                               {"unified": {"memory.oom.group": "1"}})
    d = dict(props)
    assert d["Slice"] == ("s", "system.slice")
    assert d["Delegate"] == ("b", True)
    assert d["PIDs"] == ("au", [42])
    assert d["DefaultDependencies"] == ("b", False)
    assert d["OOMPolicy"] == ("s", "kill")
    for acc in ("MemoryAccounting", "CPUAccounting", "IOAccounting", "TasksAccounting"):
        assert d[acc] == ("b", True)
    s = dict(sd.unit_properties("d", "a.slice", "b.slice", -1))
    assert s["Wants"] == ("as", ["a.slice"]) and "PIDs" not in s and "Delegate" not in s
    dbus.marshal("a(sv)", [props])  # every value is marshallable


def test_version_number():
    assert sd.version_number("252.4-1") == 252
    assert sd.version_number('"v245.4-1.fc32"') == 245
    assert sd.version_number("unknown") == -1


# --- systemd not running --------------------------------------------------------------------

def test_every_entry_point_needs_systemd(monkeypatch, tmp_path):
    monkeypatch.setattr(sd, "SYSTEMD_RUN_DIR", str(tmp_path / "nope"))
    msg = r"systemd is not running \(no /run/systemd/system\)"
    with pytest.raises(UnsupportedError, match=msg):
        sd.SystemdManager("", "c1")
    with pytest.raises(UnsupportedError, match=msg):
        sd.SystemdManager.for_container("", "c1")
    with pytest.raises(UnsupportedError, match=msg):
        sd.SystemdManager.from_state({"driver": "systemd", "id": "c1"})
    # a manager built while systemd ran refuses everything once it is gone
    monkeypatch.setattr(sd, "SYSTEMD_RUN_DIR", str(tmp_path))
    m = sd.SystemdManager("", "c1", mountpoint=str(tmp_path))
    monkeypatch.setattr(sd, "SYSTEMD_RUN_DIR", str(tmp_path / "nope"))
    calls = [lambda: m.check({}), m.create, lambda: m.add(1), lambda: m.apply({}),
             m.freeze, m.thaw, m.frozen, lambda: m.kill_all(9), m.pids, m.stats,
             m.oom_count, m.destroy]
    for call in calls:
        with pytest.raises(UnsupportedError, match=msg):
            call()


# --- a fake system bus playing systemd ----------------------------------------------------

class FakeSystemd:
    """Serves connections on a unix socket: EXTERNAL auth, then answers the calls the
    driver makes and emits JobRemoved for each job. Records every call."""

    def __init__(self, path: str, version: str = "252.1", unit_exists_once: bool = False,
                 job_result: str = "done"):
        self.path = path
        self.version = version
        self.unit_exists_once = unit_exists_once
        self.job_result = job_result
        self.calls: list[tuple[str, list]] = []
        self.auth_lines: list[bytes] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.jobs = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        try:
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.srv.close()
        self.thread.join(timeout=5)

    def serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                try:
                    self.handle(conn)
                except (OSError, ConnectionError):
                    pass

    def handle(self, conn):
        buf = b""
        while b"BEGIN\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
            if buf.endswith(b"\r\n") and b"AUTH" in buf and b"OK" not in buf[-4:]:
                if b"BEGIN" not in buf:
                    self.auth_lines.append(buf)
                    conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        rest = buf.split(b"BEGIN\r\n", 1)[1]
        serial = 1000
        while True:
            while len(rest) < 16 or len(rest) < dbus.message_length(rest[:16]):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                rest += chunk
            n = dbus.message_length(rest[:16])
            m, rest = dbus.parse_message(rest[:n]), rest[n:]
            member = m["fields"].get(dbus.F_MEMBER)
            self.calls.append((member, m["body"]))
            serial += 1
            reply = {dbus.F_REPLY_SERIAL: m["serial"]}
            out = []
            if member == "Hello":
                out.append(dbus.build_message(dbus.METHOD_RETURN, serial, reply, "s", [":1.9"]))
            elif member == "Get":
                out.append(dbus.build_message(dbus.METHOD_RETURN, serial, reply, "v",
                                              [("s", self.version)]))
            elif member in ("StartTransientUnit", "StopUnit"):
                if member == "StartTransientUnit" and self.unit_exists_once:
                    self.unit_exists_once = False
                    out.append(dbus.build_message(
                        dbus.ERROR, serial, {**reply, dbus.F_ERROR_NAME:
                                             "org.freedesktop.systemd1.UnitExists"},
                        "s", ["Unit exists"]))
                else:
                    self.jobs += 1
                    job = f"/org/freedesktop/systemd1/job/{self.jobs}"
                    out.append(dbus.build_message(dbus.METHOD_RETURN, serial, reply, "o", [job]))
                    # an unrelated signal first: the driver must skip it
                    out.append(dbus.build_message(
                        dbus.SIGNAL, serial + 1,
                        {dbus.F_PATH: sd.SD_PATH, dbus.F_INTERFACE: sd.SD_MANAGER,
                         dbus.F_MEMBER: "JobRemoved"}, "uoss",
                        [999, "/org/freedesktop/systemd1/job/999", "other.scope", "done"]))
                    out.append(dbus.build_message(
                        dbus.SIGNAL, serial + 2,
                        {dbus.F_PATH: sd.SD_PATH, dbus.F_INTERFACE: sd.SD_MANAGER,
                         dbus.F_MEMBER: "JobRemoved"}, "uoss",
                        [self.jobs, job, m["body"][0],
                         self.job_result if member == "StartTransientUnit" else "done"]))
                    serial += 2
            elif member in ("AddMatch", "Subscribe", "ResetFailedUnit", "SetUnitProperties"):
                out.append(dbus.build_message(dbus.METHOD_RETURN, serial, reply))
            else:
                out.append(dbus.build_message(
                    dbus.ERROR, serial,
                    {**reply, dbus.F_ERROR_NAME: "org.freedesktop.DBus.Error.UnknownMethod"},
                    "s", [f"unknown {member}"]))
            conn.sendall(b"".join(out))


@pytest.fixture
def fake_bus(tmp_path, monkeypatch):
    made = []

    def make(**kw) -> FakeSystemd:
        path = str(tmp_path / f"bus{len(made)}")
        f = FakeSystemd(path, **kw)
        made.append(f)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
        monkeypatch.setattr(sd, "SYSTEMD_RUN_DIR", str(tmp_path))
        return f

    yield make
    for f in made:
        f.close()


def test_connection_auth_and_hello(fake_bus):
    bus = fake_bus()
    with dbus.DBusConnection() as conn:
        assert conn.unique_name == ":1.9"
        assert sd.systemd_version(conn) == 252
        with pytest.raises(dbus.DBusError, match="UnknownMethod"):
            sd.sd_call(conn, "Reboot")
    uid_hex = str(os.geteuid()).encode().hex().encode()
    assert bus.auth_lines[0] == b"\0AUTH EXTERNAL " + uid_hex + b"\r\n"


def test_manager_lifecycle_against_fake_systemd(fake_bus, tmp_path):
    bus = fake_bus()
    mnt = tmp_path / "cgroup"
    mnt.mkdir()
    m = sd.SystemdManager("machine.slice:ctr:c1", "c1", mountpoint=str(mnt))
    assert m.unit == "ctr-c1.scope"
    assert m.fs.path == str(mnt / "machine.slice" / "ctr-c1.scope")
    applied = []
    m.fs.apply = applied.append  # no real cgroupfs here (devices need bpf on a cgroup)
    m.create()
    m.apply({"pids": {"limit": 0}})   # before the unit exists: deferred
    assert [c for c, _ in bus.calls] == [] and applied == []
    m.add(4242)
    assert applied == [{"pids": {"limit": 0}}]
    start = [b for c, b in bus.calls if c == "StartTransientUnit"]
    assert len(start) == 1
    name, mode, props, aux = start[0]
    assert (name, mode, aux) == ("ctr-c1.scope", "replace", [])
    d = dict(props)
    assert d["PIDs"] == ("au", [4242]) and d["Slice"] == ("s", "machine.slice")
    assert d["Delegate"] == ("b", True)
    assert os.path.isdir(m.fs.path)
    # the state survives a round trip; resources go to systemd and then cgroupfs
    m2 = sd.SystemdManager.from_state(m.to_state())
    assert m2.started and m2.unit == m.unit and m2.fs.path == m.fs.path
    bus.calls.clear()
    m2.fs.apply = applied.append
    m2.apply({"pids": {"limit": 10}})
    setp = [b for c, b in bus.calls if c == "SetUnitProperties"]
    assert setp == [["ctr-c1.scope", True, [("TasksMax", ("t", 10))]]]
    m2.destroy()
    assert "StopUnit" in [c for c, _ in bus.calls]
    assert "ResetFailedUnit" in [c for c, _ in bus.calls]
    assert not os.path.exists(m.fs.path)


def test_leftover_unit_is_reset_and_start_retried(fake_bus, tmp_path):
    bus = fake_bus(unit_exists_once=True)
    m = sd.SystemdManager("", "c2", mountpoint=str(tmp_path))
    m.add(1)
    assert [c for c, _ in bus.calls if c in ("StartTransientUnit", "ResetFailedUnit")] == [
        "StartTransientUnit", "ResetFailedUnit", "StartTransientUnit"]
    assert m.started


def test_failed_job_is_an_error(fake_bus, tmp_path):
    fake_bus(job_result="failed")
    m = sd.SystemdManager("", "c3", mountpoint=str(tmp_path))
    with pytest.raises(SysError, match="job failed"):
        m.add(1)
    assert not m.started


# --- a real dbus-daemon, with a thread owning org.freedesktop.systemd1 ---------------------

@pytest.fixture
def private_bus(tmp_path, monkeypatch):
    """A private dbus-daemon (session config) on a socket in tmp_path."""
    import shutil
    import subprocess

    exe = shutil.which("dbus-daemon")
    if not exe or not os.path.exists("/usr/share/dbus-1/session.conf"):
        pytest.skip("dbus-daemon (packages dbus-daemon, dbus-session-bus-common) is missing")
    path = str(tmp_path / "bus")
    proc = subprocess.Popen([exe, "--session", f"--address=unix:path={path}", "--nofork",
                             "--nopidfile", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"unix:path=")  # listening now
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
        monkeypatch.setattr(sd, "SYSTEMD_RUN_DIR", str(tmp_path))
        yield path
    finally:
        proc.kill()
        proc.wait()


def serve_as_systemd(conn: dbus.DBusConnection, calls: list, stop: threading.Event) -> None:
    jobs = 0
    conn.sock.settimeout(0.2)
    while not stop.is_set():
        try:
            m = conn.read_message()
        except SysError:
            continue
        if m["type"] != dbus.METHOD_CALL:
            continue
        member = m["fields"].get(dbus.F_MEMBER)
        calls.append((member, m["body"]))
        to = {dbus.F_REPLY_SERIAL: m["serial"], dbus.F_DESTINATION: m["fields"][dbus.F_SENDER]}
        if member == "Get":
            conn.send(dbus.METHOD_RETURN, to, "v", [("s", "250")])
        elif member in ("StartTransientUnit", "StopUnit"):
            jobs += 1
            job = f"/org/freedesktop/systemd1/job/{jobs}"
            conn.send(dbus.METHOD_RETURN, to, "o", [job])
            conn.send(dbus.SIGNAL, {dbus.F_PATH: sd.SD_PATH, dbus.F_INTERFACE: sd.SD_MANAGER,
                                    dbus.F_MEMBER: "JobRemoved"}, "uoss",
                      [jobs, job, m["body"][0], "done"])
        else:
            conn.send(dbus.METHOD_RETURN, to)


def test_against_a_real_dbus_daemon(private_bus, tmp_path):
    systemd_side = dbus.DBusConnection(private_bus)
    systemd_side.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                      "RequestName", "su", [sd.SD_DEST, 4])
    calls: list = []
    stop = threading.Event()
    t = threading.Thread(target=serve_as_systemd, args=(systemd_side, calls, stop),
                         daemon=True)
    t.start()
    try:
        with dbus.DBusConnection() as conn:
            assert conn.unique_name.startswith(":")
            names = conn.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "ListNames")[0]
            assert sd.SD_DEST in names and conn.unique_name in names
            assert sd.systemd_version(conn) == 250
            with pytest.raises(dbus.DBusError, match="ServiceUnknown"):
                conn.call("org.example.Nobody", "/", "org.example.Nobody", "Ping")
        m = sd.SystemdManager("", "c9", mountpoint=str(tmp_path / "cg"))
        m.fs.apply = lambda r: None
        m.add(77)
        m.apply({"memory": {"limit": 1 << 30}})
        m.destroy()
    finally:
        stop.set()
        t.join(timeout=10)
        systemd_side.close()
    members = [c for c, _ in calls]
    assert members == ["Get", "Subscribe", "StartTransientUnit", "Get", "SetUnitProperties",
                       "Subscribe", "StopUnit", "ResetFailedUnit"]
    start = dict(calls[2][1][2])
    assert start["PIDs"] == ("au", [77]) and start["Slice"] == ("s", "system.slice")
    assert calls[4][1] == ["pyoci-c9.scope", True, [("MemoryMax", ("t", 1 << 30))]]


# --- real systemd (QEMU lane) ---------------------------------------------------------------

@pytest.mark.lane
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.isdir("/run/systemd/system"),
                    reason="needs root and systemd as PID 1 (/run/systemd/system): QEMU lane")
def test_lane_real_scope():
    import uuid

    from pyoci import cgroups

    cid = f"pyoci-test-{uuid.uuid4().hex[:8]}"
    m = sd.SystemdManager.for_container(f"system.slice:pyoci:{cid}", cid)
    try:
        with idle_child() as pid:
            m.create()
            m.add(pid)
            m.apply({"pids": {"limit": 64}})
            with open(f"/proc/{pid}/cgroup") as f:
                assert f"/system.slice/pyoci-{cid}.scope" in f.read()
            assert pid in m.pids()
            if cgroups.mode() == "v2":
                assert open(os.path.join(m.fs.path, "pids.max")).read().strip() == "64"
    finally:
        m.destroy()
    assert not os.path.exists(getattr(m.fs, "path", "/nonexistent"))
