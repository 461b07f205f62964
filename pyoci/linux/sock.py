"""Unix sockets on the interpreter's C module `_socket` alone.

`socket` costs ~2.5 ms to import on every create/run (it pulls in `selectors`, `enum`,
`array`...), for three things pyoci needs from it: a socketpair and SCM_RIGHTS fd passing,
which are methods of `_socket.socket` (the class `socket.socket` derives from). The sockets
made here are created close-on-exec, as socket.socketpair's."""

import _socket
import sys

AF_UNIX = _socket.AF_UNIX
SOCK_STREAM = _socket.SOCK_STREAM
SOCK_SEQPACKET = _socket.SOCK_SEQPACKET
_FD_SIZE = 4    # sizeof(int)


def socketpair(family: int = AF_UNIX, type: int = SOCK_STREAM):
    """A connected pair of sockets (socket.socketpair)."""
    return _socket.socketpair(family, type, 0)


def socket(family: int = AF_UNIX, type: int = SOCK_STREAM, fileno: int | None = None):
    """A new socket, or (with fileno) a socket object for an existing descriptor."""
    if fileno is not None:
        return _socket.socket(fileno=fileno)
    return _socket.socket(family, type, 0)


def send_fds(sock, buffers: list[bytes], fds: list[int], flags: int = 0) -> int:
    """socket.send_fds: the buffers, with fds as SCM_RIGHTS ancillary data."""
    data = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder, signed=True) for fd in fds)
    return sock.sendmsg(buffers, [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)], flags)


def recv_fds(sock, bufsize: int, maxfds: int, flags: int = 0):
    """socket.recv_fds: (data, fds, msg_flags, address); the fds arrive without
    close-on-exec, as there."""
    msg, ancdata, msg_flags, addr = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * _FD_SIZE),
                                                 flags)
    fds = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(data) - len(data) % _FD_SIZE
            fds += [int.from_bytes(data[i:i + _FD_SIZE], sys.byteorder, signed=True)
                    for i in range(0, n, _FD_SIZE)]
    return msg, fds, msg_flags, addr


# --- messages of any size over SOCK_SEQPACKET (pyoci and its children) -------------------

_CHUNK = 32768      # per datagram: well below a unix socket's send buffer


def send_msg(sock, data: bytes, fds=()) -> None:
    """One message of any size: datagrams of at most _CHUNK bytes, each led by b"+" (more
    follows) or b"." (the last one); the fds ride on the first. Nothing about a config's
    size (an error message quoting a long path) may break the protocol."""
    fds = list(fds)
    i, n = 0, len(data)
    while True:
        part = data[i:i + _CHUNK]
        i += _CHUNK
        buf = (b"." if i >= n else b"+") + part
        if fds:
            send_fds(sock, [buf], fds)
            fds = []
        else:
            sock.send(buf)
        if i >= n:
            return


def _recv_one(sock, maxfds: int) -> tuple[bytes, list[int]]:
    if maxfds:
        data, fds, _, _ = recv_fds(sock, _CHUNK + 1, maxfds)
        return data, fds
    return sock.recv(_CHUNK + 1), []


def recv_msg(sock, maxfds: int = 0) -> tuple[bytes, list[int]]:
    """A send_msg message and the fds it carried; b"" at EOF (also in the middle of one)."""
    parts: list[bytes] = []
    fds: list[int] = []
    while True:
        try:
            data, got = _recv_one(sock, maxfds)
        except ConnectionResetError:
            # The peer exited with a datagram of ours unread: Linux then reports ECONNRESET
            # once (reading the error clears it) ahead of what the peer sent before it
            # exited, such as the error that made it exit. Read on.
            data, got = _recv_one(sock, maxfds)
        fds += got
        if not data:
            return b"", fds
        parts.append(data[1:])
        if data[:1] != b"+":
            return b"".join(parts), fds
