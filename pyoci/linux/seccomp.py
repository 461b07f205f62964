"""linux.seccomp: validate the config, build the BPF filter with libseccomp, load it.

The work is split so that each step can run where it is possible:

* check(cfg)            pure Python, cheap: create-time validation (no libseccomp import).
* build(cfg)            needs libseccomp (libseccomp.so.2 through ctypes; else the
                        `seccomp` or PyPI's `pyseccomp` binding): returns the BPF program
                        and the seccomp(2) flags. Run it before pivot_root (or in the
                        parent): libseccomp is found through the host's library paths.
* install(prog, flags)  only ctypes + seccomp(2): loads the program into the calling process
                        and returns the notify listener fd (or None). Safe after pivot_root.
* load(cfg)             build + install.

Like runc, the filter is exported from libseccomp and loaded with seccomp(2) directly, with
an -ENOSYS stub prepended (runc's patchbpf): syscalls newer than any syscall named in the
profile return ENOSYS instead of the default action, so that libc can fall back.
"""

from __future__ import annotations

import os

from pyoci.errors import ConfigError, SysError, UnsupportedError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    import socket
    from typing import Any

    from pyoci.spec.config import Seccomp, SeccompArg

# --- pure tables (values are libseccomp's SCMP_* == the kernel's SECCOMP_RET_*) -----------

_ACT_KILL_THREAD = 0x00000000
_ACT_KILL_PROCESS = 0x80000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_NOTIFY = 0x7FC00000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,  # libseccomp's SCMP_ACT_KILL is KILL_THREAD (as runc)
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
    "SCMP_ACT_NOTIFY": _ACT_NOTIFY,
}
_ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

_64 = 0x80000000
_LE = 0x40000000
_N32 = 0x20000000
ARCHITECTURES: dict[str, int] = {  # SCMP_ARCH_* values (AUDIT_ARCH_* except X32)
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
    "SCMP_ARCH_LOONGARCH64": 258 | _64 | _LE,
}

SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

SECCOMP_SET_MODE_FILTER = 1
_EPERM = 1
_ENOSYS = 38
_MAX_ARGS = 6
_U64 = (1 << 64) - 1

# seccomp(2) by machine (os.uname().machine), so install() needs no libseccomp.
_SYS_SECCOMP = {
    "x86_64": 317, "i386": 354, "i486": 354, "i586": 354, "i686": 354,
    "aarch64": 277, "riscv64": 277, "loongarch64": 277, "armv7l": 383, "armv8l": 383,
    "ppc64le": 358, "ppc64": 358, "ppc": 358, "s390x": 348, "s390": 348,
    "parisc": 338, "parisc64": 338, "mips": 4352, "mips64": 5312,
}

# The syscalls a runtime uses to hand the listener fd on after loading the filter: notifying
# them would deadlock (runc refuses "write" for the same reason).
_NO_NOTIFY = ("write", "sendmsg")


# --- validation ---------------------------------------------------------------------------

def _is_uint(v: object, limit: int = _U64) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limit


def _check_action(field: str, name: object, errno_ret: object, errno_field: str) -> None:
    if name not in ACTIONS:
        raise ConfigError(f"{field}: unknown action {name!r}")
    if errno_ret is not None:
        if name not in _ERRNO_ACTIONS:
            raise ConfigError(f"{errno_field}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an "
                              f"errno, not {name}")
        if not _is_uint(errno_ret, 0xFFFF):
            raise ConfigError(f"{errno_field}: {errno_ret!r} is not an errno number")


def _check_arg(field: str, arg: object) -> None:
    if not isinstance(arg, dict):
        raise ConfigError(f"{field}: must be an object")
    # index and value default to 0, as in runc and crun (upstream's schema requires them)
    if not _is_uint(arg.get("index", 0), _MAX_ARGS - 1):
        raise ConfigError(f"{field}.index: {arg.get('index')!r} is not in 0..5")
    if not _is_uint(arg.get("value", 0)):
        raise ConfigError(f"{field}.value: {arg.get('value')!r} is not a uint64")
    if "valueTwo" in arg and not _is_uint(arg["valueTwo"]):
        raise ConfigError(f"{field}.valueTwo: {arg['valueTwo']!r} is not a uint64")
    if arg.get("op") not in OPERATORS:
        raise ConfigError(f"{field}.op: unknown operator {arg.get('op')!r}")


def _check_syscall(field: str, call: object, listener: bool) -> None:
    if not isinstance(call, dict):
        raise ConfigError(f"{field}: must be an object")
    names = call.get("names")
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{field}.names: must be a non-empty array of syscall names")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{field}.names[{j}]: {name!r} is not a syscall name")
    action = call.get("action")
    _check_action(f"{field}.action", action, call.get("errnoRet"), f"{field}.errnoRet")
    if action == "SCMP_ACT_NOTIFY":
        if not listener:
            raise ConfigError(f"{field}.action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath")
        for j, name in enumerate(names):
            if name in _NO_NOTIFY:
                raise ConfigError(f"{field}.names[{j}]: SCMP_ACT_NOTIFY cannot be used for "
                                  f"the {name} syscall")
    args = call.get("args") or []
    if not isinstance(args, list):
        raise ConfigError(f"{field}.args: must be an array")
    for k, arg in enumerate(args):
        _check_arg(f"{field}.args[{k}]", arg)


def check(seccomp: dict) -> None:
    """Validate linux.seccomp at create time; raise ConfigError naming the bad field.

    Unknown syscall names are accepted (they are skipped when the filter is built)."""
    f = "linux.seccomp"
    if not isinstance(seccomp, dict):
        raise ConfigError(f"{f}: must be an object")
    default = seccomp.get("defaultAction")
    _check_action(f"{f}.defaultAction", default, seccomp.get("defaultErrnoRet"),
                  f"{f}.defaultErrnoRet")
    if default == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{f}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action")
    archs = seccomp.get("architectures") or []
    if not isinstance(archs, list):
        raise ConfigError(f"{f}.architectures: must be an array")
    for i, arch in enumerate(archs):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{f}.architectures[{i}]: unknown architecture {arch!r}")
    flags = seccomp.get("flags") or []
    if not isinstance(flags, list):
        raise ConfigError(f"{f}.flags: must be an array")
    for i, flag in enumerate(flags):
        if flag not in FLAGS:
            raise ConfigError(f"{f}.flags[{i}]: unknown flag {flag!r}")
    listener = seccomp.get("listenerPath")
    if listener is not None and (not isinstance(listener, str) or not listener):
        raise ConfigError(f"{f}.listenerPath: {listener!r} is not a path")
    if seccomp.get("listenerMetadata") is not None:
        if not listener:
            raise ConfigError(f"{f}.listenerMetadata: set without listenerPath")
        if not isinstance(seccomp["listenerMetadata"], str):
            raise ConfigError(f"{f}.listenerMetadata: must be a string")
    calls = seccomp.get("syscalls") or []
    if not isinstance(calls, list):
        raise ConfigError(f"{f}.syscalls: must be an array")
    for i, call in enumerate(calls):
        _check_syscall(f"{f}.syscalls[{i}]", call, bool(listener))


def action_value(name: str, errno_ret: int | None = None) -> int:
    """The numeric SECCOMP_RET_* action for an OCI action name (errno defaults to EPERM)."""
    base = ACTIONS[name]
    if name in _ERRNO_ACTIONS:
        return base | ((_EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


def uses_notify(seccomp: Seccomp) -> bool:
    return any(c.action == "SCMP_ACT_NOTIFY" for c in seccomp.syscalls)


def filter_flags(seccomp: Seccomp) -> int:
    """seccomp(2) flags for this config: the listed flags plus NEW_LISTENER for notify."""
    flags = 0
    for name in seccomp.flags:
        flags |= FLAGS[name]
    if uses_notify(seccomp):
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER
        if flags & SECCOMP_FILTER_FLAG_TSYNC:
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH  # TSYNC + listener needs it (5.7+)
    else:
        flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV  # only meaningful with a listener
    return flags


# --- building with libseccomp ---------------------------------------------------------------

_lib: Any = None


def libseccomp() -> Any:
    """libseccomp with the Python binding's interface (resolve_syscall, SyscallFilter, Arg,
    Attr): pyoci's own ctypes calls into libseccomp.so.2 (_Libseccomp), else the `seccomp`
    binding if installed, else PyPI's `pyseccomp`."""
    global _lib
    if _lib is None:
        lib: Any
        try:
            lib = _Libseccomp()
        except OSError:
            try:
                import seccomp
                lib = seccomp
            except ImportError:
                try:
                    import pyseccomp
                    lib = pyseccomp
                except (ImportError, RuntimeError) as e:
                    raise UnsupportedError(f"linux.seccomp: libseccomp is not available: "
                                           f"{e}") from None
        _lib = lib
    return _lib


class _Arg:
    """One argument comparison of a rule (struct scmp_arg_cmp)."""

    __slots__ = ("arg", "op", "datum_a", "datum_b")

    def __init__(self, arg: int, op: int, datum_a: int, datum_b: int = 0):
        self.arg, self.op, self.datum_a, self.datum_b = arg, op, datum_a, datum_b


class _Attr:
    """enum scmp_filter_attr values pyoci sets."""

    CTL_OPTIMIZE = 8


class _Libseccomp:
    """The part of libseccomp pyoci uses, through ctypes, with pyseccomp's interface.

    pyseccomp costs ~20 ms in every container init with a filter: it imports typing and
    weakref, and ctypes.util.find_library, which runs ldconfig in a subprocess to find a
    library the dynamic loader finds by its soname anyway. Raises OSError when
    libseccomp.so.2 cannot be loaded."""

    Arg = _Arg
    Attr = _Attr

    def __init__(self) -> None:
        import ctypes

        self.ctypes = c = ctypes
        lib = self.lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        for name, res, args in (
            ("seccomp_init", c.c_void_p, (c.c_uint32,)),
            ("seccomp_release", None, (c.c_void_p,)),
            ("seccomp_attr_set", c.c_int, (c.c_void_p, c.c_int, c.c_uint32)),
            ("seccomp_arch_exist", c.c_int, (c.c_void_p, c.c_uint32)),
            ("seccomp_arch_add", c.c_int, (c.c_void_p, c.c_uint32)),
            ("seccomp_rule_add_array", c.c_int,
             (c.c_void_p, c.c_uint32, c.c_int, c.c_uint, c.c_void_p)),
            ("seccomp_export_bpf", c.c_int, (c.c_void_p, c.c_int)),
            ("seccomp_syscall_resolve_name_arch", c.c_int, (c.c_uint32, c.c_char_p)),
            ("seccomp_syscall_resolve_num_arch", c.c_void_p, (c.c_uint32, c.c_int)),
        ):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args

        class ArgCmp(ctypes.Structure):
            _fields_ = [("arg", c.c_uint), ("op", c.c_int), ("datum_a", c.c_uint64),
                        ("datum_b", c.c_uint64)]

        self.ArgCmp = ArgCmp
        binding = self

        class SyscallFilter:
            """A libseccomp filter context (scmp_filter_ctx), released with the object."""

            def __init__(self, defaction: int) -> None:
                self.ctx = binding.lib.seccomp_init(defaction)
                if not self.ctx:
                    raise OSError(22, os.strerror(22))      # EINVAL, as pyseccomp
                self.release = binding.lib.seccomp_release

            def __del__(self) -> None:
                if getattr(self, "ctx", None):
                    self.release(self.ctx)
                    self.ctx = None

            def exist_arch(self, arch: int) -> bool:
                r = binding.lib.seccomp_arch_exist(self.ctx, arch)
                if r == 0:
                    return True
                if r == -17:                                # -EEXIST: not in the filter
                    return False
                raise binding.error(r)

            def add_arch(self, arch: int) -> None:
                binding.check(binding.lib.seccomp_arch_add(self.ctx, arch))

            def set_attr(self, attr: int, value: int) -> None:
                binding.check(binding.lib.seccomp_attr_set(self.ctx, attr, value))

            def add_rule(self, action: int, syscall: int, *args: _Arg) -> None:
                if len(args) > 6:
                    raise ValueError("Too many arguments")
                arr = (binding.ArgCmp * len(args))(
                    *(binding.ArgCmp(a.arg, a.op, a.datum_a, a.datum_b) for a in args))
                binding.check(binding.lib.seccomp_rule_add_array(self.ctx, action, syscall,
                                                                 len(args), arr))

            def export_bpf(self, file) -> None:
                binding.check(binding.lib.seccomp_export_bpf(self.ctx, file.fileno()))

        self.SyscallFilter = SyscallFilter

    @staticmethod
    def error(r: int) -> OSError:
        return OSError(-r, os.strerror(-r))

    def check(self, r: int) -> None:
        if r < 0:
            raise self.error(r)

    def resolve_syscall(self, arch: int, syscall: str | int) -> int | bytes:
        """A name's number (-1: unknown), or a number's name (ValueError: unknown)."""
        if isinstance(syscall, str):
            return self.lib.seccomp_syscall_resolve_name_arch(arch, syscall.encode())
        p = self.lib.seccomp_syscall_resolve_num_arch(arch, syscall)
        if not p:
            raise ValueError(f"Unknown syscall {syscall} on arch {arch}")
        try:
            return self.ctypes.string_at(p)
        finally:
            from pyoci.linux import syscalls

            syscalls.libc.free(self.ctypes.c_void_p(p))


def _lib_error(e: Exception) -> str:
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    return str(e) or type(e).__name__


def resolve_syscall(name: str, arch: int = 0) -> int | None:
    """Syscall number of `name` for `arch` (0: native) per libseccomp, None if unknown.
    Negative numbers are libseccomp pseudo-syscalls (exist on another architecture)."""
    lib = libseccomp()
    try:
        nr = lib.resolve_syscall(arch, name)
    except (ValueError, OSError, RuntimeError):
        return None
    return None if nr == -1 else int(nr)  # -1 == __NR_SCMP_ERROR


def _rule_conditions(args: list[SeccompArg]) -> list[list[tuple[int, int, int, int]]]:
    """The condition sets to add as separate rules: one set normally, one rule per condition
    when several conditions test the same argument (libseccomp refuses that; runc does so)."""
    conds = [(a.index, OPERATORS[a.op], a.value, a.value_two) for a in args]
    indexes = [c[0] for c in conds]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conds]
    return [conds]


def _add_rules(lib: Any, filt: Any, seccomp: Seccomp, default: int) -> None:
    for i, call in enumerate(seccomp.syscalls):
        action = action_value(call.action, call.errno_ret)
        if action == default:
            continue  # redundant; libseccomp would reject it
        for name in call.names:
            nr = resolve_syscall(name)
            if nr is None:
                continue  # unknown to libseccomp: assume the kernel lacks it (as runc)
            for conds in _rule_conditions(call.args):
                try:
                    filt.add_rule(action, nr, *(lib.Arg(*c) for c in conds))
                except (OSError, RuntimeError, ValueError) as e:
                    raise ConfigError(f"linux.seccomp.syscalls[{i}]: cannot add rule for "
                                      f"{name}: {_lib_error(e)}") from None


def _export_bpf(filt: Any) -> bytes:
    fd = os.memfd_create("pyoci-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as f:
        filt.export_bpf(f)
        f.seek(0)
        return f.read()


def build(seccomp: Seccomp) -> tuple[bytes, int]:
    """Build the filter with libseccomp; return (BPF program as struct sock_filter[], flags
    for seccomp(2)). Nothing is loaded. Call before pivot_root (libseccomp is a host lib).
    linux.seccomp passed check() (create does it) before it became the record."""
    lib = libseccomp()
    default = action_value(seccomp.default_action, seccomp.default_errno_ret)
    try:
        filt = lib.SyscallFilter(default)
    except (OSError, RuntimeError) as e:
        raise UnsupportedError(f"linux.seccomp.defaultAction: libseccomp refused "
                               f"{seccomp.default_action}: {_lib_error(e)}") from None
    for i, name in enumerate(seccomp.architectures):
        arch = ARCHITECTURES[name]
        try:
            if not filt.exist_arch(arch):
                filt.add_arch(arch)
        except (OSError, RuntimeError, ValueError) as e:
            raise UnsupportedError(f"linux.seccomp.architectures[{i}]: cannot add {name}: "
                                   f"{_lib_error(e)}") from None
    if len(seccomp.syscalls) > 32:
        # Binary-tree syscall lookup for long profiles, as runc (libseccomp <= 2.5.4 breaks
        # with it on an empty filter, hence the threshold). Optional: older libs lack it.
        try:
            filt.set_attr(lib.Attr.CTL_OPTIMIZE, 2)
        except (AttributeError, OSError, RuntimeError, ValueError):
            pass
    _add_rules(lib, filt, seccomp, default)
    try:
        program = _export_bpf(filt)
    except (OSError, RuntimeError) as e:
        raise SysError(f"linux.seccomp: exporting the BPF filter: {_lib_error(e)}") from None
    return enosys_stub(seccomp) + program, filter_flags(seccomp)


# --- the -ENOSYS stub (runc's patchbpf) ------------------------------------------------------

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGT_K = 0x25
_BPF_JSET_K = 0x45
_BPF_JA = 0x05
_BPF_RET_K = 0x06
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_ARCH_X86_64 = ARCHITECTURES["SCMP_ARCH_X86_64"]


def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    import _struct
    return _struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _enosys_section(audit: int, maxes: dict[str, int]) -> list[tuple[int, int, int, int]]:
    """Body for one AUDIT_ARCH: load nr; ENOSYS when it is above the profile's largest.
    Ends with a `ja` to the filter (k patched later, marked k=-1). Entries: code,k,jt,jf."""
    ret = (_BPF_RET_K, _ACT_ERRNO | _ENOSYS, 0, 0)
    ja = (_BPF_JA, -1, 0, 0)
    body = [(_BPF_LD_W_ABS, 0, 0, 0)]
    if audit == _AUDIT_ARCH_X86_64 and len(maxes) == 2:
        # x32 syscalls have bit 30 set: compare each mode with its own maximum.
        body += [(_BPF_JSET_K, _X32_SYSCALL_BIT, 1, 0),
                 (_BPF_JGT_K, maxes["SCMP_ARCH_X86_64"], 1, 2),
                 (_BPF_JGT_K, maxes["SCMP_ARCH_X32"], 0, 1), ret, ja]
        return body
    ((scmp, top),) = maxes.items()
    if audit == _AUDIT_ARCH_X86_64:
        # Only one of the two modes is in the profile: let the other through to the filter.
        if scmp == "SCMP_ARCH_X86_64":
            body.append((_BPF_JSET_K, _X32_SYSCALL_BIT, 2, 0))
        else:
            body.append((_BPF_JSET_K, _X32_SYSCALL_BIT, 0, 2))
    if scmp in ("SCMP_ARCH_S390", "SCMP_ARCH_S390X"):
        # Unknown syscalls are multiplexed through setup(2) == 0 on s390: ENOSYS for it.
        body.append((_BPF_JEQ_K, 0, 1, 0))
    body += [(_BPF_JGT_K, top, 0, 1), ret, ja]
    return body


def enosys_stub(seccomp: Seccomp) -> bytes:
    """BPF to prepend to the filter: for each listed architecture, syscall numbers above the
    largest one the profile names get -ENOSYS. Empty when the default action already lets
    syscalls through (ALLOW, LOG, TRACE) or is ERRNO(ENOSYS), or no architecture is listed
    (as runc)."""
    default = seccomp.default_action
    if default in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        return b""
    if default == "SCMP_ACT_ERRNO" and seccomp.default_errno_ret == _ENOSYS:
        return b""
    names = [n for c in seccomp.syscalls for n in c.names]
    per_audit: dict[int, dict[str, int]] = {}
    for arch in seccomp.architectures:
        audit = _AUDIT_ARCH_X86_64 if arch == "SCMP_ARCH_X32" else ARCHITECTURES[arch]
        top = max((nr for n in names
                   if (nr := resolve_syscall(n, ARCHITECTURES[arch])) is not None), default=0)
        if top > 0:
            per_audit.setdefault(audit, {})[arch] = top
    if not per_audit:
        return b""
    insns: list[tuple[int, int, int, int]] = [(_BPF_LD_W_ABS, 4, 0, 0)]  # A = arch
    for audit, maxes in per_audit.items():
        body = _enosys_section(audit, maxes)
        insns.append((_BPF_JEQ_K, audit, 0, len(body)))
        insns += body
    out = b""
    for idx, (code, k, jt, jf) in enumerate(insns):
        if code == _BPF_JA and k == -1:
            k = len(insns) - idx - 1  # to the first instruction of the libseccomp filter
        out += _insn(code, k, jt, jf)
    return out


# --- loading --------------------------------------------------------------------------------

def _sys_seccomp() -> int:
    nr = _SYS_SECCOMP.get(os.uname().machine)
    if nr is None:
        nr = resolve_syscall("seccomp")
        if nr is None or nr < 0:
            raise UnsupportedError("linux.seccomp: seccomp(2) number unknown on this machine")
    return nr


def _seccomp_set_filter(flags: int, program: bytes | None) -> tuple[int, int]:
    """Raw seccomp(SECCOMP_SET_MODE_FILTER, flags, prog): (return value, errno)."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    from pyoci.linux.syscalls import libc        # the shared handle; syscall returns c_long

    if program is None:
        prog_p = None
    else:
        buf = ctypes.create_string_buffer(program, len(program))
        prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
        prog_p = ctypes.byref(prog)
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(_sys_seccomp()), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                     ctypes.c_uint(flags), prog_p)
    return r, ctypes.get_errno()


def flag_supported(flag: int) -> bool:
    """Whether the kernel knows this seccomp(2) filter flag (probe with a NULL program)."""
    import errno
    _, err = _seccomp_set_filter(flag, None)
    return err == errno.EFAULT


def install(program: bytes, flags: int = 0) -> int | None:
    """Load a BPF program (from build()) into the calling process with seccomp(2).

    Needs PR_SET_NO_NEW_PRIVS or CAP_SYS_ADMIN. Returns the notify listener fd (owned by
    the caller, O_CLOEXEC) when flags has SECCOMP_FILTER_FLAG_NEW_LISTENER, else None.
    Imports nothing that is not already loaded, so it is safe after pivot_root."""
    if not program or len(program) % 8 or len(program) // 8 > 0xFFFF:
        raise SysError(f"linux.seccomp: invalid BPF program of {len(program)} bytes")
    r, err = _seccomp_set_filter(flags, program)
    if r < 0:
        if err == 22:  # EINVAL: name the flag the kernel does not know, if that is why
            for name, bit in FLAGS.items():
                if flags & bit and not flag_supported(bit):
                    raise UnsupportedError(f"linux.seccomp.flags: {name} is not supported "
                                           f"by this kernel")
        if err == 13:  # EACCES
            raise SysError("linux.seccomp: loading the filter needs no_new_privs or "
                           "CAP_SYS_ADMIN")
        raise SysError(f"linux.seccomp: seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}): "
                       f"{os.strerror(err)}")
    if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER:
        return r
    if r > 0 and flags & SECCOMP_FILTER_FLAG_TSYNC:
        raise SysError(f"linux.seccomp: SECCOMP_FILTER_FLAG_TSYNC: thread {r} could not be "
                       f"synchronized")
    return None


def load(seccomp: Seccomp) -> int | None:
    """Build linux.seccomp and load it into the calling process (see build, install).
    Returns the notify listener fd when a rule uses SCMP_ACT_NOTIFY, else None."""
    return install(*build(seccomp))


# --- the seccomp agent (listenerPath) -----------------------------------------------------

def connect_listener(path: str) -> socket.socket:
    """Connect a SOCK_STREAM unix socket to linux.seccomp.listenerPath (close-on-exec)."""
    from pyoci.linux import sock as unix
    sock = unix.socket(unix.AF_UNIX, unix.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 108:
            sock.connect(path)
        else:  # too long for sun_path: go through an O_PATH fd of the directory
            dfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            finally:
                os.close(dfd)
    except OSError as e:
        sock.close()
        raise SysError(f"linux.seccomp.listenerPath: connect {path}: "
                       f"{e.strerror or e}") from None
    return sock


def process_state(state: dict, metadata: str | None, pid: int | None = None) -> dict:
    """The spec's containerProcessState for one seccompFd."""
    cps: dict[str, Any] = {
        "ociVersion": state.get("ociVersion") or _spec_version(),
        "fds": ["seccompFd"],
        "pid": state.get("pid", 0) if pid is None else pid,
    }
    if metadata:
        cps["metadata"] = metadata
    cps["state"] = state
    return cps


def _spec_version() -> str:
    from pyoci import SPEC_VERSION
    return SPEC_VERSION


def send_listener(sock: socket.socket, notify_fd: int, state: dict, metadata: str | None,
                  pid: int | None = None) -> None:
    """Send the containerProcessState JSON with notify_fd as SCM_RIGHTS (in the first
    sendmsg) over a connected unix socket, then close the socket (one state per connection,
    as the spec requires). pid defaults to state["pid"]."""
    from pyoci import jsonio
    from pyoci.linux import sock as unix
    data = jsonio.dumps(process_state(state, metadata, pid), separators=(",", ":")).encode()
    try:
        n = unix.send_fds(sock, [data], [notify_fd])
        if n < len(data):
            sock.sendall(data[n:])
    except OSError as e:
        raise SysError(f"linux.seccomp.listenerPath: sending the seccomp fd: "
                       f"{e.strerror or e}") from None
    finally:
        sock.close()
