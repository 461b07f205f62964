"""POSIX resource limits of the container process (process.rlimits), set with prlimit(2)."""

from __future__ import annotations

import errno
import os

from pyoci.linux import cdata as ctypes   # ctypes' types and CDLL, on _ctypes alone
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux import syscalls

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import Rlimit

TYPES = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
RLIM_INFINITY = (1 << 64) - 1


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


_prlimit = syscalls.libc.prlimit
_prlimit.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_prlimit.restype = ctypes.c_int


def prlimit(pid: int, resource: int, limits: tuple[int, int] | None = None) -> tuple[int, int]:
    """prlimit(2): set (soft, hard) when given; return the previous (soft, hard).
    Values are unsigned 64-bit; RLIM_INFINITY is 2**64-1. Raises OSError."""
    old = _Rlimit()
    new = _Rlimit(*limits) if limits is not None else None
    if _prlimit(pid, resource, ctypes.byref(new) if new is not None else None,
                ctypes.byref(old)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prlimit {pid} {resource}: {os.strerror(e)}")
    return old.cur, old.max


def _fmt(v: int) -> str:
    return "unlimited" if v >= RLIM_INFINITY else str(v)


def _uint64(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= RLIM_INFINITY


def check(rlimits: list | None) -> None:
    """Create-time validation: known, unique types; soft <= hard; uint64 values."""
    if rlimits is None:
        return
    if not isinstance(rlimits, list):
        raise ConfigError("process.rlimits: must be a list")
    seen: dict[str, int] = {}
    for i, r in enumerate(rlimits):
        f = f"process.rlimits[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{f}: must be an object")
        t = r.get("type")
        if t not in TYPES:
            raise ConfigError(f'{f}: unknown rlimit type "{t}"')
        if t in seen:
            raise ConfigError(f"{f}: duplicate rlimit type {t} (also process.rlimits"
                              f"[{seen[t]}])")
        seen[t] = i
        for k in ("soft", "hard"):
            if not _uint64(r.get(k)):
                raise ConfigError(f"{f}.{k}: {t} needs an unsigned 64-bit integer, got "
                                  f"{r.get(k)!r}")
        if r["soft"] > r["hard"]:
            raise ConfigError(f"{f}: {t} soft limit {r['soft']} is greater than hard limit "
                              f"{r['hard']}")


def apply(rlimits: list[Rlimit], pid: int = 0) -> None:
    """Set each rlimit on pid (0: the calling process), in order."""
    for i, r in enumerate(rlimits):
        t = r.type
        res = TYPES.get(t)
        if res is None:
            raise ConfigError(f'process.rlimits[{i}]: unknown rlimit type "{t}"')
        soft, hard = r.soft, r.hard
        try:
            prlimit(pid, res, (soft, hard))
        except OSError as e:
            f = f"process.rlimits[{i}]"
            if e.errno == errno.EPERM:
                try:
                    cur_hard = prlimit(pid, res)[1]
                except OSError:
                    cur_hard = None
                if cur_hard is not None and hard > cur_hard:
                    raise SysError(
                        f"{f}: cannot raise {t} hard limit to {_fmt(hard)} above the current "
                        f"hard limit {_fmt(cur_hard)} without CAP_SYS_RESOURCE") from e
            if e.errno == errno.EINVAL and res == TYPES["RLIMIT_NOFILE"]:
                raise SysError(f"{f}: {t} {_fmt(hard)} is above the kernel's fs.nr_open "
                               "limit") from e
            raise SysError(f"{f}: setting {t} soft={_fmt(soft)} hard={_fmt(hard)}: "
                           f"{why(e)}") from e
