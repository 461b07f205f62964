"""Session keyring: like runc, each container gets its own session keyring (named after the
container) unless --no-new-keyring, so containers do not share the host's keys."""

from __future__ import annotations

import errno
import os

from pyoci.linux import cdata as ctypes   # ctypes' types and CDLL, on _ctypes alone
from pyoci.errors import SysError
from pyoci.linux import syscalls

SYS_keyctl = 250
KEYCTL_DESCRIBE = 6
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5

_syscall = syscalls.libc.syscall          # restype c_long, set by syscalls


def join_session_keyring(name: str) -> int | None:
    """Join a new session keyring called name; returns its serial, None where the kernel has
    no keys support. Then add view/read/write/search for the user to its permissions (runc's
    0x080f0000 on top of what the kernel gave it)."""
    serial = _syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.encode())
    if serial < 0:
        e = ctypes.get_errno()
        if e == errno.ENOSYS:
            return None
        raise SysError(f"unable to join session keyring: {os.strerror(e)}")
    buf = ctypes.create_string_buffer(512)
    n = _syscall(SYS_keyctl, KEYCTL_DESCRIBE, serial, buf, len(buf))
    if n > 0:
        parts = buf.value.decode(errors="replace").split(";")
        if len(parts) >= 4:
            perm = int(parts[3], 16) | 0x080F0000
            if _syscall(SYS_keyctl, KEYCTL_SETPERM, serial, perm) < 0:
                raise SysError("unable to set session keyring permissions: "
                               f"{os.strerror(ctypes.get_errno())}")
    return serial
