"""cgroup v2 device access control: a BPF_PROG_TYPE_CGROUP_DEVICE program built from
`linux.resources.devices`, loaded and attached with the bpf(2) syscall through ctypes.

The rule semantics mirror runc (libcontainer/cgroups/devices emulator + devicefilter):

- rules are applied in order to an emulated cgroup v1 devices controller that starts in
  deny-all (allow-list) mode; a type "a" rule resets it to allow-all (allow) or deny-all
  (deny), any other rule adds or removes an exception, merging access bits per
  (type, major, minor);
- removing part of a wildcard exception is refused (cgroup v1 would silently ignore it);
- the program checks the remaining exceptions (each either allows or denies, the opposite of
  the default) and falls through to the default.

The program is named "pyoci_dev" so that an update can find and detach only the programs
pyoci attached (systemd or others may attach their own), after attaching the new one.
"""

from __future__ import annotations

import _struct as struct   # the C module: struct and typing are slow to import
import ctypes
import errno
import os

from pyoci.errors import ConfigError, SysError, UnsupportedError
from pyoci.linux import syscalls
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

SYS_bpf = 321  # x86_64

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
BPF_F_REPLACE = 4

BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2

PROG_NAME = "pyoci_dev"
LICENSE = "Apache"

WILDCARD = -1

_ACCESS_BITS = {"r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE, "m": BPF_DEVCG_ACC_MKNOD}
_TYPE_BITS = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}


# --- rules and runc's devices emulator ---------------------------------------------------

class Rule(tuple):
    """One device rule: type "a"/"c"/"b", major/minor (-1 = any), access subset of "rwm",
    allow. A tuple with named fields, as a NamedTuple (typing is slow to import)."""

    __slots__ = ()

    def __new__(cls, type: str, major: int, minor: int, access: str, allow: bool):
        return tuple.__new__(cls, (type, major, minor, access, allow))

    type = property(lambda self: self[0])
    major = property(lambda self: self[1])
    minor = property(lambda self: self[2])
    access = property(lambda self: self[3])
    allow = property(lambda self: self[4])

    def __repr__(self) -> str:
        return "Rule(type=%r, major=%r, minor=%r, access=%r, allow=%r)" % tuple(self)


def _norm_access(acc: str) -> str:
    return "".join(c for c in "rwm" if c in acc)


def rule_from_spec(d: dict, field: str = "linux.resources.devices[]") -> Rule:
    """A linux.resources.devices entry as a Rule (absent/-1 major/minor = wildcard)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{field}: must be an object")
    allow = d.get("allow")
    if not isinstance(allow, bool):
        raise ConfigError(f"{field}.allow: must be a boolean, not {allow!r}")
    t = d.get("type") or "a"
    if t not in ("a", "b", "c"):
        raise ConfigError(f"{field}.type: must be one of a, b, c, not {t!r}")
    nums = []
    for k in ("major", "minor"):
        v = d.get(k)
        if v is None:
            v = WILDCARD
        if not isinstance(v, int) or isinstance(v, bool) or v < -1 or v > 0xFFFFFFFF:
            raise ConfigError(f"{field}.{k}: invalid device number {v!r}")
        nums.append(v)
    acc = d.get("access")
    if acc is None:
        acc = "rwm"
    if not isinstance(acc, str) or not acc or not set(acc) <= set("rwm"):
        raise ConfigError(f"{field}.access: must be a non-empty combination of r, w, m, "
                          f"not {acc!r}")
    return Rule(t, nums[0], nums[1], _norm_access(acc), allow)


def rules_from_spec(devices: Iterable[dict] | None,
                    field: str = "linux.resources.devices") -> list[Rule]:
    return [rule_from_spec(d, f"{field}[{i}]") for i, d in enumerate(devices or [])]


def emulate(rules: Iterable[Rule]) -> tuple[bool, dict[tuple[str, int, int], str]]:
    """Run rules through runc's cgroup v1 devices emulator, starting from deny-all.
    Returns (default_allow, {(type, major, minor): access}) where each exception has the
    opposite effect of the default. ConfigError when a rule would punch a hole into a
    wildcard exception (which cgroup v1 silently ignores)."""
    default_allow = False
    exc: dict[tuple[str, int, int], str] = {}
    for r in rules:
        if r.type == "a":
            default_allow = r.allow
            exc = {}
            continue
        key = (r.type, r.major, r.minor)
        if r.allow != default_allow:
            # add an exception (merge access)
            exc[key] = _norm_access(exc.get(key, "") + r.access)
            continue
        # remove (part of) an exception
        partial: tuple[str, int, int]
        for partial in ((r.type, WILDCARD, r.minor), (r.type, r.major, WILDCARD),
                        (r.type, WILDCARD, WILDCARD)):
            if partial == key:
                continue
            if set(exc.get(partial, "")) & set(r.access):
                wild = Rule(*partial, exc[partial], not r.allow)
                raise ConfigError(
                    f"linux.resources.devices: rule {format_rule(r)} cannot punch a hole "
                    f"into the wildcard rule {format_rule(wild)}")
        left = _norm_access("".join(c for c in exc.get(key, "") if c not in r.access))
        if left:
            exc[key] = left
        else:
            exc.pop(key, None)
    return default_allow, exc


def clean_rules(rules: Iterable[Rule]) -> tuple[bool, list[Rule]]:
    """The minimal ordered rule list (runc's Emulator.Rules order: by major, minor, type)
    equivalent to `rules`, without the leading "a" rule; plus the default action."""
    default_allow, exc = emulate(rules)
    ordered = sorted(exc.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))
    return default_allow, [Rule(t, ma, mi, acc, not default_allow)
                           for (t, ma, mi), acc in ordered]


def format_rule(r: Rule) -> str:
    ma = "*" if r.major == WILDCARD else str(r.major)
    mi = "*" if r.minor == WILDCARD else str(r.minor)
    return f"{'allow' if r.allow else 'deny'} {r.type} {ma}:{mi} {r.access}"


def allows(rules: Iterable[Rule], dtype: str, major: int, minor: int, access: str) -> bool:
    """What the program built from `rules` answers for one access (pure Python model of
    the generated program; used by tests and for diagnostics)."""
    default_allow, clean = clean_rules(rules)
    want = set(access)
    for r in clean:
        if r.type != dtype:
            continue
        if not want <= set(r.access):
            continue
        if r.major != WILDCARD and r.major != major:
            continue
        if r.minor != WILDCARD and r.minor != minor:
            continue
        return r.allow
    return default_allow


# --- instruction encoding ----------------------------------------------------------------

# opcode classes / fields (linux/bpf_common.h, linux/bpf.h)
_LDX_MEM_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W
_ALU_AND_K = 0x54      # BPF_ALU | BPF_AND | BPF_K
_ALU_RSH_K = 0x74      # BPF_ALU | BPF_RSH | BPF_K
_ALU_MOV_K = 0xB4      # BPF_ALU | BPF_MOV | BPF_K
_ALU_MOV_X = 0xBC      # BPF_ALU | BPF_MOV | BPF_X
_JMP_JNE_K = 0x55      # BPF_JMP | BPF_JNE | BPF_K
_JMP_JNE_X = 0x5D      # BPF_JMP | BPF_JNE | BPF_X
_JMP_EXIT = 0x95       # BPF_JMP | BPF_EXIT

R0, R1, R2, R3, R4, R5 = range(6)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn (8 bytes, little endian)."""
    if imm > 0x7FFFFFFF:
        imm -= 1 << 32
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_program(rules: Iterable[Rule]) -> list[bytes]:
    """Instructions of the device filter for `rules` (runc's devicefilter layout):
    R2 = device type, R3 = requested access, R4 = major, R5 = minor; one block per
    exception jumping to the next block on mismatch; the last block returns the default."""
    default_allow, clean = clean_rules(rules)
    prog: list[bytes] = [
        insn(_LDX_MEM_W, R2, R1, 0),          # R2 = ctx->access_type
        insn(_ALU_AND_K, R2, imm=0xFFFF),     # R2 &= 0xffff (device type)
        insn(_LDX_MEM_W, R3, R1, 0),          # R3 = ctx->access_type
        insn(_ALU_RSH_K, R3, imm=16),         # R3 >>= 16 (access)
        insn(_LDX_MEM_W, R4, R1, 4),          # R4 = ctx->major
        insn(_LDX_MEM_W, R5, R1, 8),          # R5 = ctx->minor
    ]
    for r in clean:
        block: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm); jumps -> next
        block.append((_JMP_JNE_K, R2, 0, _TYPE_BITS[r.type]))
        bits = 0
        for c in r.access:
            bits |= _ACCESS_BITS[c]
        if bits != (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD):
            block.append((_ALU_MOV_X, R1, R3, 0))
            block.append((_ALU_AND_K, R1, 0, bits))
            block.append((_JMP_JNE_X, R1, R3, 0))
        if r.major != WILDCARD:
            block.append((_JMP_JNE_K, R4, 0, r.major))
        if r.minor != WILDCARD:
            block.append((_JMP_JNE_K, R5, 0, r.minor))
        n = len(block) + 2  # + mov r0, exit
        for i, (code, dst, src, imm) in enumerate(block):
            is_jump = code in (_JMP_JNE_K, _JMP_JNE_X)
            off = (n - i - 1) if is_jump else 0
            prog.append(insn(code, dst, src, off, imm))
        prog.append(insn(_ALU_MOV_K, R0, imm=1 if r.allow else 0))
        prog.append(insn(_JMP_EXIT))
    prog.append(insn(_ALU_MOV_K, R0, imm=1 if default_allow else 0))
    prog.append(insn(_JMP_EXIT))
    return prog


# --- bpf(2) --------------------------------------------------------------------------------

_syscall = syscalls.libc.syscall          # restype c_long, set by pyoci.linux.syscalls


def bpf(cmd: int, attr: bytearray) -> int:
    """bpf(cmd, attr, sizeof attr); attr is updated in place. OSError on failure."""
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    r = _syscall(ctypes.c_long(SYS_bpf), ctypes.c_long(cmd), buf, ctypes.c_long(len(attr)))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf cmd {cmd}: {os.strerror(e)}")
    return r


def _raise_memlock() -> None:
    """Older kernels charge BPF memory to RLIMIT_MEMLOCK; raise it when we can."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def prog_load(insns: list[bytes], name: str = PROG_NAME) -> int:
    """BPF_PROG_LOAD a CGROUP_DEVICE program; returns its fd. The verifier log is in the
    error message when loading fails."""
    _raise_memlock()
    code = b"".join(insns)
    code_buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(LICENSE.encode())
    log = ctypes.create_string_buffer(65536)
    for log_level in (0, 1):
        attr = bytearray(128)
        struct.pack_into("<IIQQIIQII", attr, 0,
                         BPF_PROG_TYPE_CGROUP_DEVICE, len(insns),
                         ctypes.addressof(code_buf), ctypes.addressof(lic),
                         log_level, len(log) if log_level else 0,
                         ctypes.addressof(log) if log_level else 0, 0, 0)
        nm = name.encode()[:15]
        attr[48:48 + len(nm)] = nm
        try:
            return bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOSYS):
                raise UnsupportedError(f"linux.resources.devices: cannot load a device "
                                       f"program: {e.strerror}") from None
            if log_level == 0 and e.errno == errno.EINVAL:
                continue  # retry to get the verifier log
            msg = log.value.decode(errors="replace").strip().replace("\n", "; ")[-300:]
            raise SysError(f"linux.resources.devices: BPF_PROG_LOAD: {e.strerror}"
                           + (f" ({msg})" if msg else "")) from None
    raise AssertionError("unreachable")


def prog_attach(cgroup_fd: int, prog_fd: int, flags: int = BPF_F_ALLOW_MULTI,
                replace_fd: int = 0) -> None:
    attr = bytearray(32)
    struct.pack_into("<IIIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags,
                     replace_fd)
    bpf(BPF_PROG_ATTACH, attr)


def prog_detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = bytearray(32)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, 0)
    bpf(BPF_PROG_DETACH, attr)


def prog_query(cgroup_fd: int) -> list[int]:
    """IDs of the CGROUP_DEVICE programs attached directly to the cgroup."""
    size = 64
    for _ in range(10):
        ids = (ctypes.c_uint32 * size)()
        attr = bytearray(64)
        struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                         ctypes.addressof(ids), size)
        try:
            bpf(BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                size = struct.unpack_from("<I", attr, 24)[0]
                continue
            raise SysError(f"BPF_PROG_QUERY (BPF_CGROUP_DEVICE): {e.strerror}") from None
        cnt = struct.unpack_from("<I", attr, 24)[0]
        return list(ids[:cnt])
    raise SysError("BPF_PROG_QUERY (BPF_CGROUP_DEVICE): cannot get a complete list")


def prog_fd_by_id(prog_id: int) -> int:
    attr = bytearray(16)
    struct.pack_into("<I", attr, 0, prog_id)
    return bpf(BPF_PROG_GET_FD_BY_ID, attr)


def prog_name(prog_fd: int) -> str:
    """The name a program was loaded with (struct bpf_prog_info.name)."""
    info = ctypes.create_string_buffer(256)
    attr = bytearray(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")


def attached_programs(cgroup_dir: str) -> list[tuple[int, str]]:
    """(id, name) of every CGROUP_DEVICE program attached to cgroup_dir."""
    fd = _open_dir(cgroup_dir)
    try:
        out = []
        for pid in prog_query(fd):
            try:
                pfd = prog_fd_by_id(pid)
            except OSError:
                out.append((pid, ""))
                continue
            try:
                out.append((pid, prog_name(pfd)))
            finally:
                os.close(pfd)
        return out
    finally:
        os.close(fd)


def _open_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"open cgroup {path}: {e.strerror}") from None


def set_device_filter(cgroup_dir: str, rules: Iterable[Rule]) -> None:
    """Load the program for `rules` and attach it to cgroup_dir (BPF_F_ALLOW_MULTI), then
    detach the programs pyoci attached there before (found by name), so the cgroup is never
    left without a filter in between."""
    insns = device_program(list(rules))
    fd = _open_dir(cgroup_dir)
    old: list[int] = []
    try:
        for pid in prog_query(fd):
            try:
                pfd = prog_fd_by_id(pid)
            except OSError as e:
                if e.errno in (errno.EPERM, errno.EACCES, errno.ENOENT):
                    continue  # not ours to manage (LSM) or already gone
                raise SysError(f"BPF_PROG_GET_FD_BY_ID {pid}: {e.strerror}") from None
            if prog_name(pfd) == PROG_NAME:
                old.append(pfd)
            else:
                os.close(pfd)
        prog = prog_load(insns)
        try:
            prog_attach(fd, prog)
        except OSError as e:
            raise SysError(f"linux.resources.devices: BPF_PROG_ATTACH to {cgroup_dir}: "
                           f"{e.strerror}") from None
        finally:
            os.close(prog)
        for pfd in old:
            try:
                prog_detach(fd, pfd)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise SysError(f"BPF_PROG_DETACH old device filter from {cgroup_dir}: "
                                   f"{e.strerror}") from None
    finally:
        for pfd in old:
            os.close(pfd)
        os.close(fd)


def clear_device_filter(cgroup_dir: str) -> None:
    """Detach every device program pyoci attached to cgroup_dir."""
    fd = _open_dir(cgroup_dir)
    try:
        for pid in prog_query(fd):
            try:
                pfd = prog_fd_by_id(pid)
            except OSError:
                continue
            try:
                if prog_name(pfd) == PROG_NAME:
                    prog_detach(fd, pfd)
            except OSError:
                pass
            finally:
                os.close(pfd)
    finally:
        os.close(fd)


def skippable_error(rules: Iterable[Rule]) -> bool:
    """runc's canSkipEBPFError: a failure to install the program may be ignored only when
    running in a user namespace or when every rule is an allow-rwm rule."""
    if in_user_namespace():
        return True
    return all(r.allow and r.access == "rwm" for r in rules)


def in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            line = f.read().split()
    except OSError:
        return False
    return line[:3] != ["0", "0", "4294967295"]
