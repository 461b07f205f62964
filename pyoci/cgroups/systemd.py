"""systemd cgroup driver (`--systemd-cgroup`): the container's cgroup is a transient scope
that systemd creates over D-Bus, as runc's systemd manager does; limits are then written to
the scope's cgroupfs directory by the cgroupfs driver (v2 by default).

linux.cgroupsPath is "slice:prefix:name" -> unit "prefix-name.scope" in "slice" (a name
ending in ".slice" makes a slice unit instead). Empty -> "system.slice:pyoci:<id>".

D-Bus is spoken directly over the system bus socket by pyoci.cgroups.dbus (EXTERNAL auth,
method calls, JobRemoved signals): no dependency.
"""

from __future__ import annotations

import os

from pyoci.cgroups import common
from pyoci.cgroups.base import Manager
from pyoci.cgroups.dbus import DBusConnection, DBusError, F_MEMBER
from pyoci.errors import ConfigError, SysError, UnsupportedError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any
    from collections.abc import Callable

SYSTEMD_RUN_DIR = "/run/systemd/system"
DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "pyoci"
DEFAULT_CPU_PERIOD = 100000
USEC_INFINITY = (1 << 64) - 1

SD_DEST = "org.freedesktop.systemd1"
SD_PATH = "/org/freedesktop/systemd1"
SD_MANAGER = "org.freedesktop.systemd1.Manager"


def systemd_running() -> bool:
    """sd_booted(3): /run/systemd/system exists and is a directory."""
    return os.path.isdir(SYSTEMD_RUN_DIR)


def require_systemd() -> None:
    if not systemd_running():
        raise UnsupportedError("systemd cgroup driver: systemd is not running "
                               "(no /run/systemd/system)")


# --- systemd API -----------------------------------------------------------------------------

def sd_call(conn: DBusConnection, member: str, sig: str = "", body: list | tuple = ()) -> list:
    return conn.call(SD_DEST, SD_PATH, SD_MANAGER, member, sig, body)


def subscribe_jobs(conn: DBusConnection) -> None:
    conn.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
              "AddMatch", "s", [f"type='signal',sender='{SD_DEST}',interface='{SD_MANAGER}',"
                                f"member='JobRemoved',path='{SD_PATH}'"])
    try:
        sd_call(conn, "Subscribe")
    except DBusError as e:
        if "AlreadySubscribed" not in e.name:
            raise


def wait_job(conn: DBusConnection, job: str) -> str:
    """Wait for JobRemoved(id, job, unit, result) of job; returns result ("done"...)."""
    m = conn.wait_signal(lambda m: m["fields"].get(F_MEMBER) == "JobRemoved"
                         and len(m["body"]) == 4 and m["body"][1] == job)
    return m["body"][3]


def systemd_version(conn: DBusConnection) -> int:
    """Manager.Version as an integer ("v252.4-1" -> 252); -1 if unknown."""
    try:
        (_sig, ver), = conn.call(SD_DEST, SD_PATH, "org.freedesktop.DBus.Properties", "Get",
                                 "ss", [SD_MANAGER, "Version"])
    except (DBusError, ValueError):
        return -1
    return version_number(str(ver))


def version_number(s: str) -> int:
    s = s.lstrip('"v')
    digits = ""
    for c in s:
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else -1


def start_unit(conn: DBusConnection, unit: str, props: list) -> None:
    """StartTransientUnit(unit, "replace", props, []) and wait for the job; a leftover
    failed unit of the same name is reset and the start retried once."""
    for attempt in (0, 1):
        try:
            job, = sd_call(conn, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                           [unit, "replace", props, []])
        except DBusError as e:
            if "UnitExists" in e.name and attempt == 0:
                reset_failed(conn, unit)
                continue
            raise SysError(f"systemd: cannot start unit {unit}: {e}") from None
        result = wait_job(conn, job)
        if result != "done":
            reset_failed(conn, unit)
            raise SysError(f"systemd: creating unit {unit}: job {result}")
        return


def stop_unit(conn: DBusConnection, unit: str) -> None:
    try:
        job, = sd_call(conn, "StopUnit", "ss", [unit, "replace"])
    except DBusError as e:
        if "NoSuchUnit" not in e.name:
            raise SysError(f"systemd: cannot stop unit {unit}: {e}") from None
    else:
        wait_job(conn, job)
    reset_failed(conn, unit)


def reset_failed(conn: DBusConnection, unit: str) -> None:
    try:
        sd_call(conn, "ResetFailedUnit", "s", [unit])
    except DBusError:
        pass


def set_unit_properties(conn: DBusConnection, unit: str, props: list) -> None:
    if props:
        sd_call(conn, "SetUnitProperties", "sba(sv)", [unit, True, props])


# --- names, paths, properties (pure) ------------------------------------------------------

def parse_cgroups_path(cgroups_path: str | None, cid: str) -> tuple[str, str, str]:
    """"slice:prefix:name" -> (slice, prefix, name); empty -> (system.slice, pyoci, id)."""
    if not cgroups_path:
        return DEFAULT_SLICE, DEFAULT_PREFIX, cid
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise ConfigError(f"linux.cgroupsPath: expected \"slice:prefix:name\" for systemd "
                          f"cgroups, got {cgroups_path!r}")
    slice_, prefix, name = parts
    if "/" in slice_ + prefix + name:
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} must not contain '/'")
    return slice_ or DEFAULT_SLICE, prefix, name or cid


def unit_name(prefix: str, name: str) -> str:
    if name.endswith(".slice"):
        return name
    return f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def expand_slice(slice_: str) -> str:
    """systemd slice name to its cgroup path: "a-b.slice" -> "/a.slice/a-b.slice"."""
    suffix = ".slice"
    if len(slice_) <= len(suffix) - 1 or not slice_.endswith(suffix) or "/" in slice_:
        raise ConfigError(f"linux.cgroupsPath: invalid slice name {slice_!r}")
    name = slice_[:-len(suffix)]
    if name == "-":
        return "/"
    if not name:
        raise ConfigError(f"linux.cgroupsPath: invalid slice name {slice_!r}")
    path, prefix = "", ""
    for comp in name.split("-"):
        if not comp:
            raise ConfigError(f"linux.cgroupsPath: invalid slice name {slice_!r}")
        path += f"/{prefix}{comp}{suffix}"
        prefix += comp + "-"
    return path


def range_to_bits(s: str) -> bytes:
    """A cpuset list ("0-3,5") as systemd's AllowedCPUs byte array (little endian)."""
    try:
        ranges = common.parse_ranges(s)
    except ValueError:
        raise ConfigError(f"invalid cpuset list {s!r}") from None
    bits = 0
    for a, b in ranges:
        if a > b or a < 0:
            raise ConfigError(f"invalid cpuset list {s!r}")
        bits |= ((1 << (b - a + 1)) - 1) << a
    if bits == 0:
        raise ConfigError(f"empty cpuset list {s!r}")
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def cpu_quota_properties(quota: int, period: int, version: int) -> list:
    """runc's addCpuQuota: CPUQuotaPeriodUSec (systemd >= 242) and CPUQuotaPerSecUSec
    rounded up to whole percents of a CPU."""
    props: list = []
    if period:
        if version >= 242:
            props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_sec = USEC_INFINITY
        if quota > 0:
            per_sec = quota * 1000000 // (period or DEFAULT_CPU_PERIOD)
            if per_sec % 10000:
                per_sec = (per_sec // 10000 + 1) * 10000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


def resource_properties(resources: dict | None, version: int, unified: bool = True) -> list:
    """systemd unit properties for linux.resources (runc's genV2ResourcesProperties, or
    genV1ResourcesProperties when unified is False). Device rules are left to the cgroupfs
    driver (our eBPF program / devices.allow), so no DeviceAllow/DevicePolicy is sent."""
    from pyoci.cgroups import v2

    r = resources or {}
    props: list = []
    mem = r.get("memory") or {}
    limit = mem.get("limit") or 0
    if unified:
        if limit:
            props.append(("MemoryMax", ("t", limit & USEC_INFINITY)))
        if mem.get("reservation"):
            props.append(("MemoryLow", ("t", mem["reservation"] & USEC_INFINITY)))
        swap = v2.memory_swap_to_v2(mem.get("swap") or 0, limit)
        if swap:
            props.append(("MemorySwapMax", ("t", swap & USEC_INFINITY)))
    elif limit:
        props.append(("MemoryLimit", ("t", limit & USEC_INFINITY)))
    cpu = r.get("cpu") or {}
    idle_set = False
    if unified and cpu.get("idle") == 1 and version >= 252:
        props.append(("CPUWeight", ("t", 0)))
        idle_set = True
    if cpu.get("shares"):
        if not unified:
            props.append(("CPUShares", ("t", cpu["shares"])))
        elif not idle_set:
            props.append(("CPUWeight", ("t", v2.cpu_shares_to_weight(cpu["shares"]))))
    props += cpu_quota_properties(cpu.get("quota") or 0, cpu.get("period") or 0, version)
    if not unified and (r.get("blockIO") or {}).get("weight"):
        props.append(("BlockIOWeight", ("t", r["blockIO"]["weight"])))
    pids_limit = (r.get("pids") or {}).get("limit")
    if pids_limit is not None and (pids_limit > 0 or pids_limit == -1):
        props.append(("TasksMax", ("t", pids_limit & USEC_INFINITY)))
    if version >= 244:
        if cpu.get("cpus"):
            props.append(("AllowedCPUs", ("ay", range_to_bits(cpu["cpus"]))))
        if cpu.get("mems"):
            props.append(("AllowedMemoryNodes", ("ay", range_to_bits(cpu["mems"]))))
    if unified:
        props += unified_properties(r.get("unified") or {}, version)
    return props


def unified_properties(unified: dict[str, str], version: int) -> list:
    """Best-effort systemd properties for linux.resources.unified (runc's
    unifiedResToSystemdProps); unknown keys are only written to cgroupfs."""
    props: list = []
    mem_names = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow",
                 "memory.min": "MemoryMin", "memory.max": "MemoryMax",
                 "memory.swap.max": "MemorySwapMax"}

    def num(k: str, v: str) -> int:
        if v == "max":
            return USEC_INFINITY
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"linux.resources.unified.{k}: invalid value {v!r}") from None

    idle = unified.get("cpu.idle", "").strip() == "1" and version >= 252
    for k, v in sorted(unified.items()):
        v = v.strip()
        if k == "cpu.idle" and idle:
            props.append(("CPUWeight", ("t", 0)))
        elif k == "cpu.weight" and not idle:
            props.append(("CPUWeight", ("t", num(k, v))))
        elif k == "cpu.max":
            f = v.split()
            if not 1 <= len(f) <= 2:
                raise ConfigError(f"linux.resources.unified.{k}: invalid value {v!r}")
            quota = 0 if f[0] == "max" else num(k, f[0])
            period = num(k, f[1]) if len(f) == 2 else DEFAULT_CPU_PERIOD
            props += cpu_quota_properties(quota, period, version)
        elif k in ("cpuset.cpus", "cpuset.mems") and version >= 244:
            props.append(("AllowedCPUs" if k == "cpuset.cpus" else "AllowedMemoryNodes",
                          ("ay", range_to_bits(v))))
        elif k in mem_names:
            props.append((mem_names[k], ("t", num(k, v))))
        elif k == "pids.max":
            props.append(("TasksMax", ("t", num(k, v))))
    return props


def unit_properties(description: str, slice_: str, unit: str, pid: int,
                    resources: dict | None = None) -> list:
    """The properties runc's Apply sends with StartTransientUnit."""
    props: list = [("Description", ("s", description))]
    if unit.endswith(".slice"):
        props.append(("Wants", ("as", [slice_])))
    else:
        props.append(("Slice", ("s", slice_)))
        props.append(("Delegate", ("b", True)))
    if pid != -1:
        props.append(("PIDs", ("au", [pid])))
    for acc in ("MemoryAccounting", "CPUAccounting", "IOAccounting", "TasksAccounting"):
        props.append((acc, ("b", True)))
    props.append(("DefaultDependencies", ("b", False)))
    oom_group = ((resources or {}).get("unified") or {}).get("memory.oom.group")
    if oom_group is not None:
        if oom_group.strip() == "0":
            props.append(("OOMPolicy", ("s", "continue")))
        elif oom_group.strip() == "1":
            props.append(("OOMPolicy", ("s", "kill")))
    return props


# --- the manager ---------------------------------------------------------------------------

class SystemdManager(Manager):
    """A transient systemd scope; resources through a cgroupfs manager on its directory.

    `fs_factory(path_in_hierarchy)` builds that cgroupfs manager; the default is the v2
    driver on the unified hierarchy at `mountpoint` (pure v2 hosts). On v1/hybrid hosts the
    caller passes a factory for the v1 driver."""

    driver = "systemd"

    def __init__(self, cgroups_path: str | None, cid: str,
                 mountpoint: str = "/sys/fs/cgroup",
                 fs_factory: Callable[[str], Manager] | None = None,
                 started: bool = False, fs: Manager | None = None):
        require_systemd()
        self.cid = cid
        self.cgroups_path = cgroups_path or ""
        self.slice, self.prefix, self.name = parse_cgroups_path(cgroups_path, cid)
        self.unit = unit_name(self.prefix, self.name)
        self.mountpoint = mountpoint
        self.cgroup = expand_slice(self.slice).rstrip("/") + "/" + self.unit
        if fs is None:
            if fs_factory is None:
                from pyoci.cgroups.v2 import V2Manager

                path = os.path.join(mountpoint, self.cgroup.lstrip("/"))
                fs = V2Manager(path, mountpoint, created=[path])
            else:
                fs = fs_factory(self.cgroup)
        self.fs = fs
        self.started = started
        self.pending_resources: dict | None = None

    @classmethod
    def for_container(cls, cgroups_path: str | None, cid: str) -> SystemdManager:
        """The manager for a new container: the v2 driver under the scope on pure v2 hosts,
        the v1 driver (v1 hierarchies plus the hybrid unified one) otherwise."""
        require_systemd()
        from pyoci import cgroups

        if cgroups.mode() == "v2":
            mgr = cls(cgroups_path, cid)
            from pyoci.cgroups import paths

            m = paths.unified_mount()
            if m is not None:
                paths.check_resolved(cgroups_path, mgr.fs.leaves()[0], m,
                                     paths.own_cgroups().get(""))
            return mgr
        from pyoci.cgroups import v1

        return cls(cgroups_path, cid,
                   fs_factory=lambda cg: v1.V1Manager.for_container(cg, cid))

    def leaves(self) -> list[str]:
        return self.fs.leaves()

    def owned(self) -> bool:
        """The scope is a new transient unit (StartTransientUnit fails for an existing
        one): its cgroups are the container's once it is started."""
        return self.started

    def _unified(self) -> bool:
        return getattr(self.fs, "driver", "") == "v2"

    def check(self, resources: dict | None) -> None:
        require_systemd()
        resource_properties(resources, 10**6, self._unified())
        self.fs.check(resources)

    def create(self) -> None:
        """Nothing yet: systemd creates the scope when the first process is added (a scope
        cannot be empty)."""
        require_systemd()

    def add(self, pid: int) -> None:
        require_systemd()
        if self.started:
            self.fs.add(pid)
            return
        with DBusConnection() as conn:
            subscribe_jobs(conn)
            props = unit_properties(f"pyoci container {self.cid}", self.slice, self.unit,
                                    pid, self.pending_resources)
            start_unit(conn, self.unit, props)
            self.started = True
        self.fs.create()
        created = getattr(self.fs, "created", None)
        self.fs.found = None        # a new unit: what is in it is the container
        if created is not None:     # systemd made the scope's directories for us
            created.extend(d for d in self.fs.leaves() if d not in created)
        if self.pending_resources is not None:
            res, self.pending_resources = self.pending_resources, None
            self.apply(res)

    def apply(self, resources: dict | None) -> None:
        require_systemd()
        if not self.started:
            self.pending_resources = dict(resources or {})
            self.check(resources)
            return
        with DBusConnection() as conn:
            props = resource_properties(resources, systemd_version(conn), self._unified())
            try:
                set_unit_properties(conn, self.unit, props)
            except DBusError as e:
                raise SysError(f"systemd: set properties of {self.unit}: {e}") from None
        self.fs.apply(resources)

    def freeze(self) -> None:
        require_systemd()
        self.fs.freeze()

    def thaw(self) -> None:
        require_systemd()
        self.fs.thaw()

    def frozen(self) -> bool:
        require_systemd()
        return self.fs.frozen()

    def kill_all(self, sig: int) -> None:
        require_systemd()
        self.fs.kill_all(sig)

    def pids(self) -> list[int]:
        require_systemd()
        return self.fs.pids()

    def stats(self) -> dict[str, Any]:
        require_systemd()
        return self.fs.stats()

    def oom_count(self) -> int:
        require_systemd()
        return self.fs.oom_count()

    def destroy(self) -> None:
        require_systemd()
        if self.started:
            with DBusConnection() as conn:
                subscribe_jobs(conn)
                stop_unit(conn, self.unit)
            self.started = False
        self.fs.destroy()

    def to_state(self) -> dict[str, Any]:
        return {"driver": self.driver, "cgroupsPath": self.cgroups_path, "id": self.cid,
                "mountpoint": self.mountpoint, "started": self.started,
                "fs": self.fs.to_state()}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> SystemdManager:
        require_systemd()
        fs_state = d.get("fs") or {}
        fs: Manager | None = None
        if fs_state.get("driver") == "v2":
            from pyoci.cgroups.v2 import V2Manager

            fs = V2Manager.from_state(fs_state)
        elif fs_state:
            from pyoci.cgroups import v1

            fs = v1.V1Manager.from_state(fs_state)
        return cls(d.get("cgroupsPath"), d["id"], d.get("mountpoint", "/sys/fs/cgroup"),
                   started=d.get("started", False), fs=fs)
