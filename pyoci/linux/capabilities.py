"""Linux capabilities of the container process (process.capabilities).

Follows runc: the bounding set is cut down before the user switch (drop_bounding), the
effective/permitted/inheritable sets are set in one capset(2) after it, then ambient
capabilities are raised one by one (apply). A capability name pyoci does not know is a
config error; a known capability the running kernel lacks (> cap_last_cap) is skipped with a
warning, as runc does. `capabilities` absent (None) means: leave capabilities alone.

prctl(2) and capget/capset go through `_prctl`, the C half of python-prctl: its Python
wrapper `prctl` costs ~2 ms to import in every container init and adds nothing used here.
"""

from __future__ import annotations

import errno

from pyoci import log
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux import syscalls

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import Capabilities


# Index = capability number (include/uapi/linux/capability.h).
_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {n: i for i, n in enumerate(_NAMES)}

SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")

CAP_SETPCAP = _NUMBERS["CAP_SETPCAP"]
CAP_SYS_ADMIN = _NUMBERS["CAP_SYS_ADMIN"]


def names() -> list[str]:
    """Every capability name pyoci knows (for `pyoci features`)."""
    return list(_NAMES)


_last_cap: list[int] = []


def last_cap() -> int:
    """The highest capability number the running kernel supports (read once)."""
    if not _last_cap:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap.append(int(f.read()))
        except (OSError, ValueError):
            _last_cap.append(len(_NAMES) - 1)
    return _last_cap[0]


def _prctl_caps(_prctl) -> list[int]:
    """python-prctl's ALL_CAPS: the capability numbers its C module names (CAP_LAST_CAP
    included, as there)."""
    flags = ("CAP_EFFECTIVE", "CAP_INHERITABLE", "CAP_PERMITTED")
    return sorted({getattr(_prctl, n) for n in dir(_prctl)
                   if n.startswith("CAP_") and n not in flags})


def number(name: str) -> int | None:
    """The capability number of a name, None if unknown."""
    return _NUMBERS.get(name)


def _unavailable(caps: dict | None) -> list[str]:
    out: list[str] = []
    for s in SETS:
        for n in (caps or {}).get(s) or ():
            i = _NUMBERS.get(n)
            if i is not None and i > last_cap() and n not in out:
                out.append(n)
    return sorted(out)


def parse(cap_names, field: str = "process.capabilities") -> set[int]:
    """Capability names to numbers. Unknown names raise ConfigError naming `field`; names
    the running kernel lacks are left out (check() reports them)."""
    out: set[int] = set()
    if cap_names is None:
        return out
    if not isinstance(cap_names, (list, tuple, set, frozenset)):
        raise ConfigError(f"{field}: must be a list of capability names")
    for n in cap_names:
        i = _NUMBERS.get(n) if isinstance(n, str) else None
        if i is None:
            raise ConfigError(f'{field}: unknown capability "{n}"')
        if i <= last_cap():
            out.add(i)
    return out


def check(caps: dict | None) -> list[str]:
    """Create-time validation of process.capabilities. Returns (and logs) a warning for
    capabilities the running kernel does not have, which are ignored."""
    if caps is None:
        return []
    if not isinstance(caps, dict):
        raise ConfigError("process.capabilities: must be an object")
    for s in SETS:
        parse(caps.get(s), f"process.capabilities.{s}")
    missing = _unavailable(caps)
    if not missing:
        return []
    w = f"ignoring unknown or unavailable capabilities: {' '.join(missing)}"
    log.warning(w)
    return [w]


def _effective() -> set[int]:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                v = int(line.split()[1], 16)
                return {i for i in range(64) if v >> i & 1}
    return set()


def drop_bounding(caps: Capabilities | None) -> None:
    """Drop from the bounding set every capability not in caps.bounding.

    Like runc, does nothing without CAP_SETPCAP in the effective set (logged)."""
    if caps is None:
        return
    import _prctl

    keep = parse(caps.bounding, "process.capabilities.bounding")
    drop = [i for i in range(last_cap() + 1)
            if i not in keep and _prctl.prctl(_prctl.PR_CAPBSET_READ, i)]
    if not drop:
        return
    if CAP_SETPCAP not in _effective():
        log.warning("no CAP_SETPCAP: leaving the capability bounding set unchanged")
        return
    for i in drop:
        try:
            _prctl.prctl(_prctl.PR_CAPBSET_DROP, i)
        except OSError as e:
            if e.errno == errno.EINVAL:  # not supported by this kernel
                continue
            raise SysError(f"process.capabilities.bounding: drop {_NAMES[i]}: "
                           f"{why(e)}") from e


def _clear_ambient() -> None:
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: kernel without ambient capabilities
            raise SysError(f"process.capabilities.ambient: clear: {why(e)}") from e


def apply(caps: Capabilities | None, hold: frozenset[int] = frozenset()) -> list[str]:
    """After the user switch: set inheritable, permitted and effective (one capset, so
    the kernel checks them together), then reset ambient and raise each ambient capability.
    A failed ambient raise is a warning (returned and logged), as in runc.

    hold: capabilities kept in the permitted and effective sets on top of the config's
    (CAP_SYS_ADMIN to load a seccomp filter without no_new_privs as the last thing before
    the execve), where the process still has them. They do not outlive the execve: its
    new permitted and effective sets come from the inheritable, bounding and ambient sets
    and the uid only (capabilities(7)), which are the config's."""
    import _prctl

    if caps is None:
        if hold:
            try:
                _prctl.set_caps(sorted(hold), [], [], [], [], [])
            except OSError:
                pass          # not in the permitted set: the filter's load says why
        return []
    eff = parse(caps.effective, "process.capabilities.effective")
    prm = parse(caps.permitted, "process.capabilities.permitted")
    inh = parse(caps.inheritable, "process.capabilities.inheritable")
    amb = parse(caps.ambient, "process.capabilities.ambient")
    known = [i for i in _prctl_caps(_prctl) if i <= last_cap()]
    for extra in ((hold, ()) if hold else ((),)):
        e2, p2 = eff | set(extra), prm | set(extra)
        try:
            # (effective, permitted, inheritable) to set, then the same three to clear
            _prctl.set_caps([i for i in known if i in e2], [i for i in known if i in p2],
                            [i for i in known if i in inh], [i for i in known if i not in e2],
                            [i for i in known if i not in p2],
                            [i for i in known if i not in inh])
            break
        except OSError as e:
            if extra:
                continue      # the held ones are not in the permitted set: without them
            raise SysError("process.capabilities: can't apply capabilities: "
                           f"{why(e)}") from e
    _clear_ambient()
    warnings: list[str] = []
    for i in sorted(amb):
        try:
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, i)
        except OSError as e:
            w = f"can't raise ambient capability {_NAMES[i]}: {why(e)}"
            log.warning(w)
            warnings.append(w)
    return warnings
