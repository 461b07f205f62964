"""A process pyoci starts in a container, from its setup to its execve: execute() is the one
routine the container's init (pyoci.init) and an exec'd process (pyoci.joiner) both end
with; plus the process attributes it applies (user, capabilities, umask, cwd: finalize, after
runc's finalizeNamespace/setupUser; no_new_privs, personality, I/O priority, scheduler, exec
CPU affinity, oom_score_adj) and their create-time check()."""

from __future__ import annotations

import errno
import os

from pyoci.linux import cdata as ctypes   # ctypes' types and CDLL, on _ctypes alone
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux import capabilities, child, rlimits, syscalls
from pyoci.record import dataclass, field
from pyoci.spec import config

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyoci.linux.channel import Channel
    from pyoci.spec.config import (ExecCPUAffinity, IOPriority, Personality, Process,
                                   Scheduler, User)


DEFAULT_UMASK = 0o022

PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
# include/uapi/linux/personality.h; the spec defines no flags yet, these are the kernel's.
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000,
    "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000,
    "ADDR_LIMIT_3GB": 0x8000000,
}

IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1
SYS_ioprio_get = 252

SCHED_POLICIES = {
    "SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
    "SCHED_IDLE": 5, "SCHED_DEADLINE": 6,
}
SCHED_FLAGS = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}
SYS_sched_getattr = 315
MAX_CPU = 65536  # largest CPU number accepted in a CPU list (as runc)

_syscall = syscalls.libc.syscall          # restype c_long, set by syscalls


class SchedAttr(ctypes.Structure):
    """struct sched_attr (SCHED_ATTR_SIZE_VER1)."""
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- the routine: prepare this process and execute the program ---------------------------

@dataclass
class Launch:
    """What execute() needs: the runtime-spec process and what the runtime made for it."""

    process: Process                       # the runtime-spec process (pyoci.spec.config)
    chan: Channel                          # to the runtime (closed: the init after Ready)
    personality: Personality | None = None   # linux.personality
    console_fd: int = -1                   # where the pty's master goes (process.terminal)
    preserve: int = 0                      # fds 3..3+preserve-1 pass to the program
    extra_env: list[str] = field(default_factory=list)   # K=V after process.env
    seccomp: tuple[bytes, int] | None = None   # the built filter, loaded right before execve
    notify: Callable[[int], None] | None = None   # passes the filter's notify fd on
    rootless: bool = False                 # started by a user other than root


def preload(process: Process) -> None:
    """Import what execute() uses: it runs after pivot_root or setns(mount), where an import
    would resolve in the container's root filesystem."""
    import _prctl  # noqa: F401 - used by capabilities and finalize

    if process.apparmor_profile:
        from pyoci.linux import apparmor  # noqa: F401
    if process.terminal:
        import termios  # noqa: F401

        from pyoci.linux import terminal  # noqa: F401


def exec_cpu_affinity(process: Process, stage: str) -> None:
    """process.execCPUAffinity's stage ("initial": before joining the container's cgroup,
    "final": right before the execve) for this process."""
    apply_exec_cpu_affinity(process.exec_cpu_affinity, stage)


def execute(launch: Launch, *, setup: Callable[[], None] | None = None,
            wait: Callable[[str, dict[str, str]], None] | None = None) -> None:
    """Prepare this process (in the container's namespaces and root already) and execute
    the program; never returns (an error raises: the caller reports it and exits).

    The order, runc's: terminal; setup() (the init's rest of the container: hostname,
    sysctls, read-only root...); AppArmor, rlimits, oom_score_adj, personality, I/O
    priority, scheduler; no_new_privs; user, capabilities, cwd and umask (finalize); no
    longer dumpable; the program looked up; only stdio and the preserved fds kept;
    wait(path, env) (the init: Ready, then `start`); the final CPU affinity; seccomp, the
    last thing before the execve."""
    proc = launch.process
    if proc.terminal:
        from pyoci.linux import terminal

        master, slave = terminal.open_pty(proc.console_size)
        terminal.send_master(launch.console_fd, master)
        os.close(master)
        terminal.become_controlling(slave)
    if launch.console_fd >= 0:
        os.close(launch.console_fd)
        launch.console_fd = -1
    if setup is not None:
        setup()
    apply_attributes(proc, launch.personality)
    nnp = proc.no_new_privileges
    if nnp:
        set_no_new_privileges()
    env = child.process_env(proc, launch.extra_env)
    os.environ["HOME"] = env["HOME"]          # finalize would look it up in /etc/passwd again
    # Without no_new_privs the filter's load needs CAP_SYS_ADMIN: finalize keeps it
    # effective until the execve, so that the filter is the last thing before it.
    finalize(proc, hold_admin=bool(launch.seccomp) and not nnp, rootless=launch.rootless)
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)   # a uid change resets it to suid_dumpable
    path = child.find_executable(proc.args[0], env)
    child.keep_fds_across_exec(launch.preserve)
    if wait is not None:
        wait(path, env)
    exec_cpu_affinity(proc, "final")
    if launch.seccomp:
        from pyoci.linux import seccomp

        notify_fd = seccomp.install(*launch.seccomp)
        if notify_fd is not None:
            try:
                if launch.notify is not None:
                    launch.notify(notify_fd)
            finally:
                os.close(notify_fd)
    try:
        os.execve(path, proc.args, env)
    except OSError as e:
        if launch.chan.closed:    # after `start`: on the program's stderr, as the waiter's
            raise
        raise SysError(f"process.args[0]: exec {path}: {child.errno_text(e)}") from None


def apply_attributes(proc: Process, personality: Personality | None) -> None:
    """AppArmor (on exec), rlimits, oom_score_adj, personality (linux.personality), I/O
    priority, scheduler: everything set while still privileged, before the user switch."""
    if proc.apparmor_profile:
        from pyoci.linux import apparmor

        apparmor.apply_on_exec(proc.apparmor_profile)
    rlimits.apply(proc.rlimits)
    if proc.oom_score_adj is not None:
        set_oom_score_adj(proc.oom_score_adj)
    apply_personality(personality)
    apply_io_priority(proc.io_priority)
    apply_scheduler(proc.scheduler)


# --- user, capabilities, cwd, umask --------------------------------------------------------

def _id_mapped(idx: int, map_path: str) -> bool:
    try:
        with open(map_path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return True
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            inside, _, count = (int(x) for x in parts)
            if inside <= idx < inside + count:
                return True
    return False


def home_dir(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of uid in passwd, "/" when there is none."""
    try:
        with open(passwd) as f:
            for line in f:
                p = line.rstrip("\n").split(":")
                if len(p) >= 7 and p[2] == str(uid):
                    return p[5] or "/"
    except OSError:
        pass
    return "/"


def fix_stdio_ownership(uid: int) -> None:
    """chown stdin/stdout/stderr to uid (keeping their group) unless they are /dev/null or
    already owned by uid, as runc's fixStdioPermissions; EINVAL/EPERM/EROFS are ignored."""
    try:
        null_rdev = os.stat("/dev/null").st_rdev
    except OSError:
        null_rdev = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid or (null_rdev is not None and st.st_rdev == null_rdev):
            continue
        try:
            os.fchown(fd, uid, st.st_gid)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise SysError(f"process.user.uid: chown stdio fd {fd}: "
                               f"{why(e)}") from e


def setgroups_allowed() -> bool:
    """False when /proc/self/setgroups says "deny" (unprivileged user namespace)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except FileNotFoundError:
        return True


def setup_user(user: User, rootless: bool = False) -> None:
    """setgroups(additionalGids), setgid, setuid, and HOME if unset (runc's setupUser)."""
    uid, gid = int(user.uid), int(user.gid)
    groups = [int(g) for g in user.additional_gids]
    if not _id_mapped(uid, "/proc/self/uid_map"):
        raise ConfigError(f"process.user.uid: cannot set uid to {uid}, unmapped in the user "
                          "namespace")
    if not _id_mapped(gid, "/proc/self/gid_map"):
        raise ConfigError(f"process.user.gid: cannot set gid to {gid}, unmapped in the user "
                          "namespace")
    if rootless and groups:
        raise ConfigError("process.user.additionalGids: cannot set additional groups in a "
                          "rootless container")
    fix_stdio_ownership(uid)
    if not rootless and setgroups_allowed():
        try:
            os.setgroups(groups)
        except OSError as e:
            raise SysError(f"process.user.additionalGids: setgroups {groups}: "
                           f"{why(e)}") from e
    try:
        os.setgid(gid)
    except OSError as e:
        raise SysError(f"process.user.gid: setgid {gid}: {why(e)}") from e
    try:
        os.setuid(uid)
    except OSError as e:
        raise SysError(f"process.user.uid: setuid {uid}: {why(e)}") from e
    if not os.environ.get("HOME"):
        os.environ["HOME"] = home_dir(uid)


def _chdir(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as e:
        raise ConfigError(f'process.cwd: chdir to "{cwd}": {why(e)}') from e


def _verify_cwd() -> None:
    try:
        wd = os.getcwd()
    except FileNotFoundError as e:
        raise SysError("process.cwd: current working directory is outside of the container's "
                       "root -- possible container breakout") from e
    if not os.path.isabs(wd):
        raise SysError(f"process.cwd: current working directory {wd!r} is not absolute")


def finalize(process: Process, *, rootless: bool = False, hold_admin: bool = False) -> None:
    """runc's finalizeNamespace from the bounding set to the capabilities, then umask:
    chdir(cwd) (retried after the user switch on EACCES/EPERM), drop the bounding set,
    KEEPCAPS on, setgroups/setgid/setuid, KEEPCAPS off, apply capabilities, umask.

    process.capabilities absent: capabilities are left alone (a non-root user then keeps no
    effective capabilities and loses the rest at execve, like runc). The parent death
    signal, which setuid clears, is restored.

    hold_admin: CAP_SYS_ADMIN stays effective (see capabilities.apply) so that a seccomp
    filter can be loaded without no_new_privs after all of this, right before the execve:
    then nothing of the setup runs under the container's filter."""
    import _prctl   # python-prctl's C module; its Python wrapper only costs import time

    cwd = process.cwd
    retry_chdir = False
    if cwd:
        try:
            os.chdir(cwd)
        except PermissionError:
            retry_chdir = True
        except OSError as e:
            raise ConfigError(f'process.cwd: chdir to "{cwd}": {why(e)}') from e
    caps = process.capabilities
    pdeath = _prctl.prctl(_prctl.PR_GET_PDEATHSIG)
    capabilities.drop_bounding(caps)
    _prctl.prctl(_prctl.PR_SET_KEEPCAPS, True)
    setup_user(process.user, rootless)
    if retry_chdir:
        _chdir(cwd)
    if cwd:
        _verify_cwd()
    _prctl.prctl(_prctl.PR_SET_KEEPCAPS, False)
    capabilities.apply(caps, frozenset({capabilities.CAP_SYS_ADMIN}) if hold_admin
                       else frozenset())
    if pdeath:
        _prctl.prctl(_prctl.PR_SET_PDEATHSIG, pdeath)
    umask = process.user.umask
    os.umask(DEFAULT_UMASK if umask is None else umask)


# --- other process attributes -------------------------------------------------------------

def set_no_new_privileges() -> None:
    try:
        syscalls.set_no_new_privs()
    except OSError as e:
        raise SysError(f"process.noNewPrivileges: prctl(PR_SET_NO_NEW_PRIVS): "
                       f"{why(e)}") from e


def personality_value(p: Personality) -> int:
    """The personality(2) argument for linux.personality."""
    domain = p.domain
    if domain not in PERSONALITY_DOMAINS:
        raise ConfigError(f'linux.personality.domain: unknown domain "{domain}"')
    v = PERSONALITY_DOMAINS[domain]
    for i, fl in enumerate(p.flags):
        if fl not in PERSONALITY_FLAGS:
            raise ConfigError(f'linux.personality.flags[{i}]: unknown flag "{fl}"')
        v |= PERSONALITY_FLAGS[fl]
    return v


def apply_personality(p: Personality | None) -> None:
    if p is None:
        return
    v = personality_value(p)
    try:
        syscalls.personality(v)
    except OSError as e:
        raise SysError(f"linux.personality: personality({v:#x}): {why(e)}") from e


def ioprio_value(p: IOPriority) -> int:
    """The ioprio_set(2) value for process.ioPriority."""
    cls = p.klass
    if cls not in IOPRIO_CLASSES:
        raise ConfigError(f'process.ioPriority.class: unknown class "{cls}"')
    prio = p.priority
    if not _int(prio) or not 0 <= prio <= 7:
        raise ConfigError(f"process.ioPriority.priority: {prio!r} is not in 0..7")
    return IOPRIO_CLASSES[cls] << IOPRIO_CLASS_SHIFT | prio


def apply_io_priority(p: IOPriority | None, pid: int = 0) -> None:
    if p is None:
        return
    v = ioprio_value(p)
    try:
        syscalls.ioprio_set(IOPRIO_WHO_PROCESS, pid, v)
    except OSError as e:
        raise SysError(f"process.ioPriority: ioprio_set {p.klass} "
                       f"{p.priority}: {why(e)}") from e


def ioprio_get(pid: int = 0) -> int:
    r = _syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"ioprio_get {pid}: {os.strerror(e)}")
    return r


def sched_attr(p: Scheduler) -> SchedAttr:
    """Validate process.scheduler and build its struct sched_attr."""
    policy = p.policy
    if policy not in SCHED_POLICIES:
        raise ConfigError(f'process.scheduler.policy: unknown policy "{policy}"')
    nice = p.nice
    if not _int(nice) or not -20 <= nice <= 19:
        raise ConfigError(f"process.scheduler.nice: {nice!r} is not in -20..19")
    prio = p.priority
    if not _int(prio) or not 0 <= prio <= 99:
        raise ConfigError(f"process.scheduler.priority: {prio!r} is not in 0..99")
    if prio and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise ConfigError("process.scheduler.priority: only for SCHED_FIFO or SCHED_RR, "
                          f"not {policy}")
    flags = 0
    for i, fl in enumerate(p.flags):
        if fl not in SCHED_FLAGS:
            raise ConfigError(f'process.scheduler.flags[{i}]: unknown flag "{fl}"')
        flags |= SCHED_FLAGS[fl]
    dl = {}
    for k in ("runtime", "deadline", "period"):
        v = getattr(p, k)
        if not _int(v) or not 0 <= v < 1 << 64:
            raise ConfigError(f"process.scheduler.{k}: {v!r} is not an unsigned 64-bit integer")
        if v and policy != "SCHED_DEADLINE":
            raise ConfigError(f"process.scheduler.{k}: only for SCHED_DEADLINE, not {policy}")
        dl[k] = v
    return SchedAttr(ctypes.sizeof(SchedAttr), SCHED_POLICIES[policy], flags, nice, prio,
                     dl["runtime"], dl["deadline"], dl["period"], 0, 0)


def sched_setattr(pid: int, attr: SchedAttr, flags: int = 0) -> None:
    if _syscall(syscalls.SYS_sched_setattr, pid, ctypes.byref(attr), ctypes.c_uint(flags)):
        e = ctypes.get_errno()
        raise OSError(e, f"sched_setattr {pid}: {os.strerror(e)}")


def sched_getattr(pid: int = 0) -> SchedAttr:
    attr = SchedAttr()
    if _syscall(SYS_sched_getattr, pid, ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)),
                ctypes.c_uint(0)):
        e = ctypes.get_errno()
        raise OSError(e, f"sched_getattr {pid}: {os.strerror(e)}")
    return attr


def apply_scheduler(p: Scheduler | None, pid: int = 0) -> None:
    if p is None:
        return
    attr = sched_attr(p)
    try:
        sched_setattr(pid, attr)
    except OSError as e:
        raise SysError(f"process.scheduler: sched_setattr {p.policy}: "
                       f"{why(e)}") from e


def parse_cpu_list(s: str, field: str = "process.execCPUAffinity") -> set[int]:
    """A CPU list like "0-1,3" to a set; "" is the empty set (unset). Blank items between
    commas are allowed, blanks inside a range are not (as runc)."""
    if not isinstance(s, str):
        raise ConfigError(f"{field}: {s!r} is not a CPU list string")
    if s == "":
        return set()
    cpus: set[int] = set()
    for item in s.split(","):
        item = item.strip()
        if not item:
            continue
        first, dash, last = item.partition("-")      # N or N-M, N and M any \d+
        if not first.isdecimal() or (dash and not last.isdecimal()):
            raise ConfigError(f'{field}: invalid CPU list "{s}" at "{item}"')
        lo = int(first)
        hi = int(last) if dash else lo
        if lo > hi:
            raise ConfigError(f'{field}: invalid CPU range "{item}" in "{s}"')
        if hi > MAX_CPU:
            raise ConfigError(f'{field}: CPU {hi} in "{s}" is above the maximum {MAX_CPU}')
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise ConfigError(f'{field}: invalid CPU list "{s}"')
    return cpus


def apply_exec_cpu_affinity(p: ExecCPUAffinity, stage: str, pid: int = 0) -> None:
    """Set the CPU affinity of pid (0: self) to process.execCPUAffinity[stage] ("initial":
    before joining the container's cgroup, "final": after). Unset: nothing is changed."""
    if stage not in ("initial", "final"):
        raise ValueError(f"stage must be 'initial' or 'final', not {stage!r}")
    s = getattr(p, stage)
    if not s:
        return
    field = f"process.execCPUAffinity.{stage}"
    cpus = parse_cpu_list(s, field)
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError as e:
        raise SysError(f'{field}: sched_setaffinity "{s}": {why(e)}') from e


def set_oom_score_adj(value: int, pid: int | None = None) -> None:
    """Write /proc/<pid|self>/oom_score_adj. Lowering it needs CAP_SYS_RESOURCE."""
    path = f"/proc/{'self' if pid is None else pid}/oom_score_adj"
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as e:
        hint = ""
        if e.errno in (errno.EACCES, errno.EPERM):
            hint = " (lowering it needs CAP_SYS_RESOURCE)"
        raise SysError(f"process.oomScoreAdj: write {value} to {path}: {why(e)}"
                       f"{hint}") from e


# --- create-time validation ---------------------------------------------------------------

def _check_user(user: object) -> None:
    if user is None:
        return
    if not isinstance(user, dict):
        raise ConfigError("process.user: must be an object")
    for k in ("uid", "gid"):
        v = user.get(k, 0)
        if not _int(v) or not 0 <= v < 1 << 32:
            raise ConfigError(f"process.user.{k}: {v!r} is not an unsigned 32-bit integer")
    gids = user.get("additionalGids")
    if gids is not None:
        if not isinstance(gids, list):
            raise ConfigError("process.user.additionalGids: must be a list")
        for i, g in enumerate(gids):
            if not _int(g) or not 0 <= g < 1 << 32:
                raise ConfigError(f"process.user.additionalGids[{i}]: {g!r} is not an "
                                  "unsigned 32-bit integer")
    umask = user.get("umask")
    if umask is not None and (not _int(umask) or not 0 <= umask < 1 << 32):
        raise ConfigError(f"process.user.umask: {umask!r} is not an unsigned 32-bit integer")


def check_personality(p: dict | None) -> None:
    if p is None:
        return
    if not isinstance(p, dict):
        raise ConfigError("linux.personality: must be an object")
    personality_value(config.Personality.parse(p))


def check_env(env) -> None:
    """process.env entries are NAME=VALUE with a name and no NUL byte: refused at create
    (the init would die before `start`), as runc refuses them, with runc's words."""
    if env is None:
        return
    if not isinstance(env, list):
        raise ConfigError("process.env: must be a list of strings")
    for i, item in enumerate(env):
        if not isinstance(item, str):
            raise ConfigError(f"process.env[{i}]: must be a string")
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"process.env[{i}]: invalid environment variable: {item!r}")
        if not name:
            raise ConfigError(f"process.env[{i}]: environment variable name can't be empty: "
                              f"{item!r}")
        if "\0" in item:
            part = "name" if "\0" in name else "value"
            raise ConfigError(f"process.env[{i}]: environment variable {part} can't contain "
                              f"null (\\x00): {item!r}")


def check(process: dict, personality: dict | None = None) -> list[str]:
    """Create-time validation of process.* handled here (user, cwd, capabilities, rlimits,
    scheduler, ioPriority, execCPUAffinity, oomScoreAdj) and of linux.personality.
    Returns warnings (capabilities the kernel lacks)."""
    if not isinstance(process, dict):
        raise ConfigError("process: must be an object")
    _check_user(process.get("user"))
    cwd = process.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)):
        raise ConfigError(f"process.cwd: {cwd!r} is not an absolute path")
    check_env(process.get("env"))
    warnings = capabilities.check(process.get("capabilities"))
    rlimits.check(process.get("rlimits"))
    for key in ("scheduler", "ioPriority"):
        value = process.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"process.{key}: must be an object")
        if key == "scheduler":
            sched_attr(config.Scheduler.parse(value))
        else:
            ioprio_value(config.IOPriority.parse(value))
    aff = process.get("execCPUAffinity")
    if aff is not None:
        if not isinstance(aff, dict):
            raise ConfigError("process.execCPUAffinity: must be an object")
        for stage in ("initial", "final"):
            if aff.get(stage) is not None:
                parse_cpu_list(aff[stage], f"process.execCPUAffinity.{stage}")
    oom = process.get("oomScoreAdj")
    if oom is not None and (not _int(oom) or not -1000 <= oom <= 1000):
        raise ConfigError(f"process.oomScoreAdj: {oom!r} is not in -1000..1000")
    nnp = process.get("noNewPrivileges")
    if nnp is not None and not isinstance(nnp, bool):
        raise ConfigError("process.noNewPrivileges: must be a boolean")
    check_personality(personality)
    return warnings
