"""ttrpc, containerd's light RPC protocol, over a unix socket.

Every message is a frame: a 10-byte header -- payload length (uint32), stream id (uint32),
type (uint8: 1 request, 2 response, 3 data) and flags (uint8), all big-endian -- then the
payload. A request's payload is a Request message (service, method, the call's own message,
timeout, metadata); the answer on the same stream id is a Response (a google.rpc.Status and
the result message). Clients number their streams with odd ids. A payload may be at most
4 MiB; a larger request is answered with RESOURCE_EXHAUSTED and the connection goes on.

The server answers each request on its own thread (containerd keeps a Wait call open while
it sends others on the same connection); responses are written whole under a lock.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from pyoci.shim import pb

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE = 4 << 20
TYPE_REQUEST, TYPE_RESPONSE, TYPE_DATA = 1, 2, 3

# google.golang.org/grpc/codes
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT = 0, 1, 2, 3
DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED = 4, 5, 6, 7
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE = 8, 9, 10, 11
UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 12, 13, 14


class TtrpcError(Exception):
    """An error a method returns: a status code and the message the client prints."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class FrameError(Exception):
    """The peer broke the framing (short header, truncated payload)."""


def encode_frame(stream_id: int, mtype: int, payload: bytes, flags: int = 0) -> bytes:
    if len(payload) > MAX_MESSAGE:
        raise TtrpcError(RESOURCE_EXHAUSTED,
                         f"message length {len(payload)} exceed maximum message size of "
                         f"{MAX_MESSAGE}")
    return HEADER.pack(len(payload), stream_id, mtype, flags) + payload


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise FrameError(f"connection closed after {len(buf)} of {n} bytes")
            return b""
        buf += chunk
    return bytes(buf)


def _discard(sock: socket.socket, n: int) -> None:
    while n > 0:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise FrameError("connection closed inside an oversized frame")
        n -= len(chunk)


def read_frame(sock: socket.socket) -> tuple[int, int, int, bytes | None] | None:
    """(stream id, type, flags, payload) of the next frame; None at a clean end of stream.
    The payload is None when the frame was larger than MAX_MESSAGE (it was skipped)."""
    head = _read_exact(sock, HEADER_SIZE)
    if not head:
        return None
    length, stream_id, mtype, flags = HEADER.unpack(head)
    if length > MAX_MESSAGE:
        _discard(sock, length)
        return stream_id, mtype, flags, None
    payload = _read_exact(sock, length) if length else b""
    if length and not payload:
        raise FrameError(f"connection closed before a {length}-byte payload")
    return stream_id, mtype, flags, payload


def error_response(code: int, message: str) -> bytes:
    return pb.Response(status=pb.Status(code=code, message=message)).SerializeToString()


class Server:
    """Serves `methods`: {(service, method): (request class, handler)}; a handler takes the
    decoded request and returns a message, or raises TtrpcError."""

    def __init__(self, listener: socket.socket, methods: dict, log=None, trace=None):
        self.listener = listener
        self.methods = methods
        self.log = log or (lambda msg: None)
        self.trace = trace       # trace(method, seconds, error or None) after each call
        self._closing = False

    def serve_forever(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self._closing:
                    return
                raise
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _serve_conn(self, conn: socket.socket) -> None:
        wlock = threading.Lock()
        try:
            while True:
                frame = read_frame(conn)
                if frame is None:
                    return
                stream_id, mtype, _flags, payload = frame
                if mtype != TYPE_REQUEST:
                    continue        # data frames belong to streaming calls: none served
                if payload is None:
                    self._send(conn, wlock, stream_id, error_response(
                        RESOURCE_EXHAUSTED, f"message length exceeds maximum message size "
                                            f"of {MAX_MESSAGE}"))
                    continue
                threading.Thread(target=self._call, args=(conn, wlock, stream_id, payload),
                                 daemon=True).start()
        except (OSError, FrameError) as e:
            self.log(f"ttrpc connection: {e}")
        finally:
            conn.close()

    def _send(self, conn, wlock, stream_id: int, data: bytes) -> None:
        try:
            frame = encode_frame(stream_id, TYPE_RESPONSE, data)
        except TtrpcError as e:
            frame = encode_frame(stream_id, TYPE_RESPONSE, error_response(e.code, e.message))
        with wlock:
            try:
                conn.sendall(frame)
            except OSError as e:
                self.log(f"ttrpc response on stream {stream_id}: {e}")

    def _call(self, conn, wlock, stream_id: int, payload: bytes) -> None:
        self._send(conn, wlock, stream_id, self.dispatch(payload))

    def dispatch(self, payload: bytes) -> bytes:
        """The Response (serialized) to one serialized Request."""
        try:
            req = pb.Request.FromString(payload)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
            return error_response(INVALID_ARGUMENT, f"malformed ttrpc request: {e}")
        entry = self.methods.get((req.service, req.method))
        if entry is None:
            known = any(s == req.service for s, _ in self.methods)
            what = f"method {req.method}" if known else f"service {req.service}"
            return error_response(UNIMPLEMENTED, f"{what}: not implemented")
        cls, handler = entry
        try:
            msg = cls.FromString(req.payload)
        except Exception as e:  # noqa: BLE001
            return error_response(INVALID_ARGUMENT,
                                  f"{req.method}: malformed {cls.DESCRIPTOR.name}: {e}")
        t0 = time.monotonic()
        error = None
        try:
            result = handler(msg)
            return pb.Response(payload=result.SerializeToString()).SerializeToString()
        except TtrpcError as e:
            error = e.message
            return error_response(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a bug must not hang containerd's call
            error = f"{req.method}: {type(e).__name__}: {e}"
            self.log(error)
            return error_response(UNKNOWN, error)
        finally:
            if self.trace is not None:
                self.trace(req.method, time.monotonic() - t0, error)


class Client:
    """A synchronous ttrpc client (one call at a time): for tests and the shim's tools."""

    def __init__(self, address: str, timeout: float | None = 60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address.removeprefix("unix://"))
        self.next_id = 1
        self.lock = threading.Lock()

    def call(self, service: str, method: str, request, response_cls, metadata=None):
        req = pb.Request(service=service, method=method, payload=request.SerializeToString())
        for k, v in (metadata or {}).items():
            req.metadata.add(key=k, value=v)
        with self.lock:
            sid = self.next_id
            self.next_id += 2
            self.sock.sendall(encode_frame(sid, TYPE_REQUEST, req.SerializeToString()))
            while True:
                frame = read_frame(self.sock)
                if frame is None:
                    raise TtrpcError(UNAVAILABLE, "ttrpc: closed")
                if frame[0] == sid and frame[1] == TYPE_RESPONSE:
                    break
        resp = pb.Response.FromString(frame[3] or b"")
        if resp.status.code != OK:
            raise TtrpcError(resp.status.code, resp.status.message)
        return response_cls.FromString(resp.payload)

    def close(self) -> None:
        self.sock.close()


def listen(path: str) -> socket.socket:
    """A listening unix socket at path (a stale socket file is replaced)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(128)
    return s
