"""A D-Bus client spoken directly over a unix socket, with no dependency: the wire
marshaller (little endian, every basic and container type), message framing, EXTERNAL
authentication, method calls and signal waits. The systemd cgroup driver
(pyoci.cgroups.systemd) is its user."""

from __future__ import annotations

import _socket   # the C modules: socket, struct and typing cost milliseconds at import
import _struct as struct
import os

from pyoci.errors import SysError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any
    from collections.abc import Callable

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
CALL_TIMEOUT = 30.0             # seconds a reply (or a systemd job's signal) may take


# --- D-Bus marshalling -------------------------------------------------------------------

_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
          "u": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4)}
_ALIGN = {**{k: v[1] for k, v in _FIXED.items()}, "s": 4, "o": 4, "g": 1, "a": 4, "(": 8,
          "{": 8, "v": 1}


def split_signature(sig: str) -> list[str]:
    """Split a signature into complete types: "sa(sv)u" -> ["s", "a(sv)", "u"]."""
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _type_end(sig: str, i: int) -> int:
    if i >= len(sig):
        raise ValueError(f"bad D-Bus signature {sig!r}")
    c = sig[i]
    if c == "a":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        depth, j = 0, i
        while j < len(sig):
            if sig[j] in "({":
                depth += 1
            elif sig[j] in ")}":
                depth -= 1
                if depth == 0:
                    if sig[j] != close:
                        break
                    return j + 1
            j += 1
        raise ValueError(f"bad D-Bus signature {sig!r}")
    if c in _ALIGN:
        return i + 1
    raise ValueError(f"bad D-Bus signature {sig!r}")


def _pad(buf: bytearray, n: int) -> None:
    buf.extend(b"\0" * (-len(buf) % n))


def marshal(sig: str, values: list | tuple, buf: bytearray | None = None) -> bytearray:
    """Append values (one per complete type of sig) to buf, little endian, aligned
    relative to the start of buf. Variants are (signature, value) pairs; structs are
    tuples; dicts (a{..}) are dicts or lists of pairs."""
    buf = bytearray() if buf is None else buf
    types = split_signature(sig)
    if len(types) != len(values):
        raise ValueError(f"signature {sig!r} wants {len(types)} values, got {len(values)}")
    for t, v in zip(types, values):
        _marshal_one(t, v, buf)
    return buf


def _marshal_one(t: str, v: Any, buf: bytearray) -> None:
    c = t[0]
    if c in _FIXED:
        fmt, size = _FIXED[c]
        _pad(buf, size)
        if c == "b":
            v = 1 if v else 0
        buf.extend(struct.pack("<" + fmt, v))
    elif c in "so":
        b = v.encode()
        _pad(buf, 4)
        buf.extend(struct.pack("<I", len(b)) + b + b"\0")
    elif c == "g":
        b = v.encode()
        buf.extend(struct.pack("<B", len(b)) + b + b"\0")
    elif c == "v":
        vsig, val = v
        _marshal_one("g", vsig, buf)
        _marshal_one(vsig, val, buf)
    elif c == "(":
        _pad(buf, 8)
        inner = split_signature(t[1:-1])
        if len(inner) != len(v):
            raise ValueError(f"struct {t} wants {len(inner)} fields, got {len(v)}")
        for it, iv in zip(inner, v):
            _marshal_one(it, iv, buf)
    elif c == "a":
        elem = t[1:]
        _pad(buf, 4)
        len_at = len(buf)
        buf.extend(b"\0\0\0\0")
        _pad(buf, _ALIGN[elem[0]])
        start = len(buf)
        if elem[0] == "{":
            kt, vt = split_signature(elem[1:-1])
            items = v.items() if isinstance(v, dict) else v
            for k, val in items:
                _pad(buf, 8)
                _marshal_one(kt, k, buf)
                _marshal_one(vt, val, buf)
        elif elem == "y" and isinstance(v, (bytes, bytearray)):
            buf.extend(v)
        else:
            for item in v:
                _marshal_one(elem, item, buf)
        struct.pack_into("<I", buf, len_at, len(buf) - start)
    else:
        raise ValueError(f"cannot marshal D-Bus type {t!r}")


def unmarshal(sig: str, data: bytes, offset: int = 0) -> tuple[list, int]:
    """Inverse of marshal: (values, new offset). Alignment is relative to data[0]."""
    out = []
    for t in split_signature(sig):
        v, offset = _unmarshal_one(t, data, offset)
        out.append(v)
    return out, offset


def _align(off: int, n: int) -> int:
    return off + (-off % n)


def _unmarshal_one(t: str, data: bytes, off: int) -> tuple[Any, int]:
    c = t[0]
    if c in _FIXED:
        fmt, size = _FIXED[c]
        off = _align(off, size)
        (v,) = struct.unpack_from("<" + fmt, data, off)
        return (bool(v) if c == "b" else v), off + size
    if c in "so":
        off = _align(off, 4)
        (n,) = struct.unpack_from("<I", data, off)
        return data[off + 4:off + 4 + n].decode(), off + 5 + n
    if c == "g":
        n = data[off]
        return data[off + 1:off + 1 + n].decode(), off + 2 + n
    if c == "v":
        vsig, off = _unmarshal_one("g", data, off)
        val, off = _unmarshal_one(vsig, data, off)
        return (vsig, val), off
    if c == "(":
        off = _align(off, 8)
        vals = []
        for it in split_signature(t[1:-1]):
            v, off = _unmarshal_one(it, data, off)
            vals.append(v)
        return tuple(vals), off
    if c == "a":
        elem = t[1:]
        off = _align(off, 4)
        (n,) = struct.unpack_from("<I", data, off)
        off = _align(off + 4, _ALIGN[elem[0]])
        end = off + n
        if elem == "y":
            return bytes(data[off:end]), end
        if elem[0] == "{":
            kt, vt = split_signature(elem[1:-1])
            d = {}
            while off < end:
                off = _align(off, 8)
                k, off = _unmarshal_one(kt, data, off)
                d[k], off = _unmarshal_one(vt, data, off)
            return d, end
        items = []
        while off < end:
            v, off = _unmarshal_one(elem, data, off)
            items.append(v)
        return items, end
    raise ValueError(f"cannot unmarshal D-Bus type {t!r}")


# --- messages --------------------------------------------------------------------------------

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
F_PATH, F_INTERFACE, F_MEMBER, F_ERROR_NAME, F_REPLY_SERIAL = 1, 2, 3, 4, 5
F_DESTINATION, F_SENDER, F_SIGNATURE = 6, 7, 8
_FIELD_SIG = {F_PATH: "o", F_INTERFACE: "s", F_MEMBER: "s", F_ERROR_NAME: "s",
              F_REPLY_SERIAL: "u", F_DESTINATION: "s", F_SENDER: "s", F_SIGNATURE: "g"}


def build_message(msg_type: int, serial: int, fields: dict[int, Any],
                  sig: str = "", body: list | tuple = (), flags: int = 0) -> bytes:
    """A complete D-Bus message (little endian, protocol version 1)."""
    payload = marshal(sig, list(body)) if sig else bytearray()
    fields = dict(fields)
    if sig:
        fields[F_SIGNATURE] = sig
    hdr_fields = [(code, (_FIELD_SIG[code], v)) for code, v in sorted(fields.items())]
    buf = marshal("yyyyuua(yv)", [ord("l"), msg_type, flags, 1, len(payload), serial,
                                  hdr_fields])
    _pad(buf, 8)
    return bytes(buf + payload)


def message_length(head: bytes) -> int:
    """Total length of a message from its first 16 bytes."""
    if head[0:1] != b"l":
        raise SysError("D-Bus: big-endian messages are not supported")
    body_len, _serial, fields_len = struct.unpack_from("<III", head, 4)
    return _align(16 + fields_len, 8) + body_len


def parse_message(data: bytes) -> dict[str, Any]:
    """{"type", "flags", "serial", "fields": {code: value}, "body": [..]}."""
    (_e, mtype, flags, _v, body_len, serial, fields), off = unmarshal("yyyyuua(yv)", data)
    fdict = {code: val for code, (_s, val) in fields}
    off = _align(off, 8)
    body_data = data[off:off + body_len]
    sig = fdict.get(F_SIGNATURE, "")
    body = unmarshal(sig, body_data)[0] if sig else []
    return {"type": mtype, "flags": flags, "serial": serial, "fields": fdict, "body": body}


def bus_address() -> str:
    """Path of the system bus socket (DBUS_SYSTEM_BUS_ADDRESS unix:path=... honoured)."""
    addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    for part in addr.split(";"):
        if part.startswith("unix:"):
            for kv in part[5:].split(","):
                if kv.startswith("path="):
                    return kv[5:]
    return SYSTEM_BUS_SOCKET


class DBusError(SysError):
    def __init__(self, name: str, message: str):
        super().__init__(f"D-Bus error {name}: {message}")
        self.name = name


class DBusConnection:
    """One authenticated connection to a message bus (state: socket, serial, signals
    received while waiting for replies)."""

    def __init__(self, path: str | None = None, timeout: float = CALL_TIMEOUT):
        path = path or bus_address()
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self._auth()
        except OSError as e:
            self.sock.close()
            raise SysError(f"D-Bus: connect to {path}: {e.strerror or e}") from None
        self.serial = 0
        self.pending: list[dict] = []
        self.rbuf = b""
        self.unique_name = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "Hello")[0]

    def _auth(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise SysError("D-Bus: connection closed during authentication")
            line += chunk
        if not line.startswith(b"OK "):
            raise SysError(f"D-Bus: authentication rejected: {line.strip().decode()!r}")
        self.sock.sendall(b"BEGIN\r\n")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DBusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        while len(self.rbuf) < n:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:                 # socket.timeout
                raise SysError("D-Bus: timed out waiting for the bus") from None
            if not chunk:
                raise SysError("D-Bus: connection closed by the bus")
            self.rbuf += chunk
        out, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return out

    def read_message(self) -> dict:
        head = self._recv_exact(16)
        rest = self._recv_exact(message_length(head) - 16)
        return parse_message(head + rest)

    def send(self, msg_type: int, fields: dict[int, Any], sig: str = "",
             body: list | tuple = ()) -> int:
        self.serial += 1
        self.sock.sendall(build_message(msg_type, self.serial, fields, sig, body))
        return self.serial

    def call(self, dest: str, path: str, iface: str, member: str, sig: str = "",
             body: list | tuple = ()) -> list:
        serial = self.send(METHOD_CALL, {F_PATH: path, F_INTERFACE: iface, F_MEMBER: member,
                                         F_DESTINATION: dest}, sig, body)
        while True:
            m = self.read_message()
            if m["type"] in (METHOD_RETURN, ERROR) and \
                    m["fields"].get(F_REPLY_SERIAL) == serial:
                if m["type"] == ERROR:
                    text = m["body"][0] if m["body"] and isinstance(m["body"][0], str) else ""
                    raise DBusError(m["fields"].get(F_ERROR_NAME, "?"), text)
                return m["body"]
            if m["type"] == SIGNAL:
                self.pending.append(m)

    def wait_signal(self, match: Callable[[dict], bool]) -> dict:
        for i, m in enumerate(self.pending):
            if match(m):
                return self.pending.pop(i)
        while True:
            m = self.read_message()
            if m["type"] == SIGNAL:
                if match(m):
                    return m
                self.pending.append(m)
