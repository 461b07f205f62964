"""Thin ctypes layer over the Linux system calls Python's os module lacks.

One small function per syscall, named after it. Each raises OSError (with errno and a
message naming the call and its argument) on failure. Tests may monkeypatch any of them.
Constants are for x86_64 (syscall numbers) and the generic Linux ABI. Built on `_ctypes`
and `posix` alone (pyoci.linux.cdata): importing it costs no `ctypes`, no `os`.
"""

from __future__ import annotations

import posix
import sys

from pyoci.linux import cdata as ctypes   # ctypes' types and CDLL, on _ctypes alone

# The one handle on the C library: every pyoci module calling libc through ctypes uses it
# (each CDLL would otherwise build its own function pointers).
libc = _libc = ctypes.CDLL(None)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# --- clone / namespace flags -------------------------------------------------------------
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# --- mount flags -------------------------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# mount_setattr / open_tree / move_mount
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = posix.O_CLOEXEC
MOVE_MOUNT_F_SYMLINKS = 0x1
MOVE_MOUNT_F_AUTOMOUNTS = 0x2
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86_64 syscall numbers
SYS_ioprio_set = 251
SYS_pivot_root = 155
SYS_setns = 308
SYS_unshare = 272
SYS_sched_setattr = 314
SYS_open_tree = 428
SYS_move_mount = 429
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
SYS_pidfd_send_signal = 424
SYS_pidfd_open = 434
SYS_clone3 = 435
SYS_close_range = 436
SYS_openat2 = 437
SYS_mount_setattr = 442
SYS_personality = 135

_unshare = _libc.unshare
_setns = _libc.setns
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                   ctypes.c_char_p)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong)
_sethostname = _libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_setdomainname = _libc.setdomainname
_setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)


def _err(what: str, arg: object = None) -> OSError:
    e = ctypes.get_errno()
    msg = f"{what}: {posix.strerror(e)}" if arg is None else f"{what} {arg}: {posix.strerror(e)}"
    return OSError(e, msg)


def _show(s: str | bytes | None) -> str:
    """s as an error message shows it (bytes decoded as file names are)."""
    if s is None or isinstance(s, str):
        return str(s)
    return s.decode(_FS_ENCODING, _FS_ERRORS)   # os.fsdecode


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return s.encode(_FS_ENCODING, _FS_ERRORS)   # os.fsencode


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def unshare(flags: int) -> None:
    if _unshare(flags) != 0:
        raise _err("unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    if _setns(fd, nstype) != 0:
        raise _err("setns", hex(nstype))


def mount(source: str | bytes | None, target: str | bytes, fstype: str | bytes | None,
          flags: int = 0, data: str | bytes | None = None) -> None:
    if _mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _err("mount", f"{_show(source)} on {_show(target)} ({_show(fstype)})")


def umount2(target: str | bytes, flags: int = 0) -> None:
    if _umount2(_b(target), flags) != 0:
        raise _err("umount2", target)


def pivot_root(new_root: str | bytes, put_old: str | bytes) -> None:
    if _syscall(SYS_pivot_root, _b(new_root), _b(put_old)) != 0:
        raise _err("pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    r = _prctl(option, arg2, arg3, arg4, arg5)
    if r < 0:
        raise _err("prctl", option)
    return r


def sethostname(name: str) -> None:
    b = name.encode()
    if _sethostname(b, len(b)) != 0:
        raise _err("sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    if _setdomainname(b, len(b)) != 0:
        raise _err("setdomainname", name)


def personality(persona: int) -> int:
    r = _syscall(SYS_personality, ctypes.c_ulong(persona))
    if r < 0:
        raise _err("personality", hex(persona))
    return r


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    if _syscall(SYS_ioprio_set, which, who, ioprio) != 0:
        raise _err("ioprio_set", ioprio)


def pidfd_open(pid: int, flags: int = 0) -> int:
    r = _syscall(SYS_pidfd_open, pid, flags)
    if r < 0:
        raise _err("pidfd_open", pid)
    return r


def pidfd_send_signal(pidfd: int, sig: int, flags: int = 0) -> None:
    if _syscall(SYS_pidfd_send_signal, pidfd, sig, None, flags) != 0:
        raise _err("pidfd_send_signal", sig)


def close_range(first: int, last: int, flags: int = 0) -> None:
    if _syscall(SYS_close_range, ctypes.c_uint(first), ctypes.c_uint(last),
                ctypes.c_uint(flags)) != 0:
        raise _err("close_range")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags | posix.O_CLOEXEC, mode, resolve)
    r = _syscall(SYS_openat2, dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how))
    if r < 0:
        raise _err("openat2", path)
    return r


def open_tree(dirfd: int, path: str | bytes, flags: int) -> int:
    r = _syscall(SYS_open_tree, dirfd, _b(path), ctypes.c_uint(flags))
    if r < 0:
        raise _err("open_tree", path)
    return r


def move_mount(from_dirfd: int, from_path: str | bytes, to_dirfd: int, to_path: str | bytes,
               flags: int) -> None:
    if _syscall(SYS_move_mount, from_dirfd, _b(from_path), to_dirfd, _b(to_path),
                ctypes.c_uint(flags)) != 0:
        raise _err("move_mount", to_path)


FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    r = _syscall(SYS_fsopen, _b(fstype), ctypes.c_uint(flags))
    if r < 0:
        raise _err("fsopen", fstype)
    return r


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None,
             aux: int = 0) -> None:
    if _syscall(SYS_fsconfig, fd, ctypes.c_uint(cmd), _b(key), _b(value), aux) < 0:
        raise _err("fsconfig", key)


def fsmount(fd: int, flags: int = FSMOUNT_CLOEXEC, attrs: int = 0) -> int:
    r = _syscall(SYS_fsmount, fd, ctypes.c_uint(flags), ctypes.c_uint(attrs))
    if r < 0:
        raise _err("fsmount")
    return r


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str | bytes, flags: int, attr_set: int = 0,
                  attr_clr: int = 0, propagation: int = 0, userns_fd: int = 0) -> None:
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    if _syscall(SYS_mount_setattr, dirfd, _b(path), ctypes.c_uint(flags), ctypes.byref(attr),
                ctypes.sizeof(attr)) != 0:
        raise _err("mount_setattr", path)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)
