"""cgroup v2 (unified hierarchy) driver, following runc's fs2 manager.

`V2Manager(path, mountpoint)` manages one container cgroup directory `path` inside the
cgroup2 hierarchy mounted at `mountpoint` (/sys/fs/cgroup on pure v2 hosts; tests use a
hybrid host's /sys/fs/cgroup/unified). linux.resources is mapped as runc does:

- memory: limit -> memory.max, reservation -> memory.low, swap -> memory.swap.max as
  swap - limit (runc's ConvertMemorySwapToCgroupV2Value); -1 -> "max"; checkBeforeUpdate
  refuses limits at or below memory.current; kernel, kernelTCP, swappiness,
  disableOOMKiller and useHierarchy have no v2 knob and are ignored (runc ignores them too);
- cpu: shares -> cpu.weight (see cpu_shares_to_weight), quota/period -> cpu.max,
  burst -> cpu.max.burst, idle -> cpu.idle, cpus/mems -> cpuset.cpus/cpuset.mems,
  realtimeRuntime/realtimePeriod -> UnsupportedError (no v2 equivalent);
- pids.limit -> pids.max (<= 0 -> "max");
- blockIO: weight -> io.bfq.weight when BFQ is there, else io.weight converted
  (runc's ConvertBlkIOToIOWeightValue); weightDevice -> io.bfq.weight per device;
  throttle*Device -> io.max rbps/wbps/riops/wiops; leafWeight is ignored;
- hugepageLimits -> hugetlb.<size>.max (and .rsvd.max where the kernel has it);
- rdma -> rdma.max; network (net_cls/net_prio) has no v2 equivalent and is ignored;
- unified: written last, line by line, to files that must exist in the container's cgroup;
- devices: an eBPF device program (pyoci.cgroups.ebpf) with runc's default rules appended.
"""

from __future__ import annotations

import _signal   # not signal, re, typing: slow to import on every create
import errno
import math
import os
import time

from pyoci.cgroups import common
from pyoci.cgroups.base import Manager
from pyoci.errors import ConfigError, SysError, UnsupportedError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

DEFAULT_MOUNTPOINT = "/sys/fs/cgroup"
MAX_UINT64 = (1 << 64) - 1
DEFAULT_CPU_PERIOD = 100000


# --- conversions (pure functions) --------------------------------------------------------

def cpu_shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] -> cgroup v2 cpu.weight [1, 10000]; 0 = unset.

    This is the quadratic-in-log mapping used by opencontainers/cgroups since v0.0.4
    (runc >= 1.4, crun >= 1.23): it maps the v1 default 1024 to the v2 default 100, which
    the older linear formula (runc <= 1.3, see cpu_shares_to_weight_linear) did not
    (1024 -> 39)."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(math.pow(10, exponent)))


def cpu_shares_to_weight_linear(shares: int) -> int:
    """runc <= 1.3's linear conversion: 1 + (shares - 2) * 9999 / 262142 (0 = unset)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """cgroup v1 blkio.weight [10, 1000] -> v2 io.weight [1, 10000] (runc's linear map)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def memory_swap_to_v2(swap: int, memory: int) -> int:
    """OCI memory.swap (memory+swap) -> memory.swap.max (swap only), as runc's
    ConvertMemorySwapToCgroupV2Value: -1 = unlimited, 0 = unset. ConfigError when the
    combination cannot be expressed."""
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if memory == -1:
        return swap
    if memory == 0:
        raise ConfigError("linux.resources.memory.swap: unable to set swap limit "
                          "without memory limit")
    if memory < 0:
        raise ConfigError(f"linux.resources.memory.limit: invalid memory value {memory}")
    if swap < memory:
        raise ConfigError("linux.resources.memory.swap: memory+swap limit should be >= "
                          "memory limit")
    return swap - memory


def num_to_str(v: int) -> str:
    """runc's numToStr for .max/.low/.high files: 0 -> "" (unset), -1 -> "max"."""
    if v == 0:
        return ""
    if v == -1:
        return "max"
    return str(v)


def cpu_max_value(quota: int | None, period: int | None) -> str | None:
    """cpu.max content for quota/period, or None when neither is set."""
    q = quota or 0
    p = period or 0
    if q == 0 and p == 0:
        return None
    s = str(q) if q > 0 else "max"
    return f"{s} {p or DEFAULT_CPU_PERIOD}"


def rdma_line(device: str, limits: dict) -> str:
    line = device
    if limits.get("hcaHandles") is not None:
        line += f" hca_handle={limits['hcaHandles']}"
    if limits.get("hcaObjects") is not None:
        line += f" hca_object={limits['hcaObjects']}"
    return line


def device_rules(resources: dict | None) -> list:
    """linux.resources.devices followed by runc's default allowed devices, as ebpf Rules."""
    from pyoci.cgroups import ebpf

    devs = list((resources or {}).get("devices") or [])
    return (ebpf.rules_from_spec(devs)
            + ebpf.rules_from_spec(list(common.DEFAULT_DEVICE_RULES), "default devices"))


def parse_psi(text: str | None) -> dict | None:
    """A *.pressure file as runc's PSIStats: {"some": {avg10, avg60, avg300, total}, ...}."""
    if text is None:
        return None
    out: dict[str, dict] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        d: dict[str, float | int] = {}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            try:
                d[k] = int(v) if k == "total" else float(v)
            except ValueError:
                continue
        out[parts[0]] = d
    return out


def _omit_zero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in (0, None, [], {})}


# --- the manager ---------------------------------------------------------------------------

class V2Manager(Manager):
    driver = "v2"
    join_in_background = True

    def __init__(self, path: str, mountpoint: str = DEFAULT_MOUNTPOINT,
                 created: list[str] | None = None):
        mountpoint = os.path.normpath(mountpoint)
        if not os.path.isabs(path):
            path = os.path.join(mountpoint, path)
        path = os.path.normpath(path)
        if not common.is_within(path, mountpoint):
            raise ConfigError(f"linux.cgroupsPath: {path} is outside the cgroup2 "
                              f"hierarchy at {mountpoint}")
        self.path = path
        self.mountpoint = mountpoint
        self.created: list[str] = list(created or [])
        self.rootless = False     # no device program (an unprivileged user cannot load one)

    @classmethod
    def for_container(cls, cgroups_path: str | None, cid: str) -> V2Manager:
        """The manager for a container on a pure v2 host: an absolute cgroupsPath is
        relative to the hierarchy root, a relative one (or the id when empty) to this
        process's own cgroup, as runc's fs2 defaultDirPath."""
        from pyoci.cgroups import paths

        mounts = paths.cgroup_mounts()
        m = paths.unified_mount(mounts)
        path = paths.unified_path(cgroups_path, cid, mounts)
        if m is None or path is None:
            raise UnsupportedError("cgroup v2 driver: no cgroup2 hierarchy is mounted")
        return cls(path, m.mountpoint)

    # -- validation --------------------------------------------------------------------

    def available_controllers(self) -> set[str]:
        """Controllers the hierarchy offers (cgroup.controllers at the mount point)."""
        return set((common.read_opt(self.mountpoint, "cgroup.controllers") or "").split())

    def check(self, resources: dict | None) -> None:
        if not resources:
            return
        F = "linux.resources"
        common.want_dict(F, resources)
        avail = self.available_controllers()

        def need(ctrl: str, field: str) -> None:
            if ctrl not in avail:
                raise UnsupportedError(f"{field}: the {ctrl} controller is not available in "
                                       f"the cgroup v2 hierarchy at {self.mountpoint}")

        mem = resources.get("memory")
        if mem is not None:
            common.want_dict(f"{F}.memory", mem)
            vals = {}
            for k in ("limit", "reservation", "swap"):
                if mem.get(k) is not None:
                    vals[k] = common.want_int(f"{F}.memory.{k}", mem[k], -1)
            memory_swap_to_v2(vals.get("swap", 0), vals.get("limit", 0))
            if any(vals.values()):
                need("memory", f"{F}.memory")
        cpu = resources.get("cpu")
        if cpu is not None:
            common.want_dict(f"{F}.cpu", cpu)
            for k in ("realtimeRuntime", "realtimePeriod"):
                if cpu.get(k):
                    raise UnsupportedError(f"{F}.cpu.{k}: realtime scheduling limits are not "
                                           f"supported on cgroup v2")
            if cpu.get("shares") is not None:
                common.want_int(f"{F}.cpu.shares", cpu["shares"], 0)
            if cpu.get("quota") is not None:
                common.want_int(f"{F}.cpu.quota", cpu["quota"], -1)
            for k in ("period", "burst"):
                if cpu.get(k) is not None:
                    common.want_int(f"{F}.cpu.{k}", cpu[k], 0)
            if cpu.get("idle") is not None:
                common.want_int(f"{F}.cpu.idle", cpu["idle"], 0, 1)
            if (cpu.get("shares") or cpu.get("quota") or cpu.get("period")
                    or cpu.get("burst") is not None or cpu.get("idle") is not None):
                need("cpu", f"{F}.cpu")
            for k in ("cpus", "mems"):
                if cpu.get(k):
                    common.want_cpulist(f"{F}.cpu.{k}", cpu[k])
                    need("cpuset", f"{F}.cpu.{k}")
        pids = resources.get("pids")
        if pids is not None:
            common.want_dict(f"{F}.pids", pids)
            if pids.get("limit") is not None:
                common.want_int(f"{F}.pids.limit", pids["limit"])
                if pids["limit"] != 0:
                    need("pids", f"{F}.pids")
        bio = resources.get("blockIO")
        if bio is not None:
            common.want_dict(f"{F}.blockIO", bio)
            used = False
            if bio.get("weight"):
                common.want_int(f"{F}.blockIO.weight", bio["weight"], 10, 1000)
                used = True
            for i, wd in enumerate(bio.get("weightDevice") or []):
                f = f"{F}.blockIO.weightDevice[{i}]"
                common.want_dict(f, wd)
                common.want_int(f"{f}.major", wd.get("major"), 0)
                common.want_int(f"{f}.minor", wd.get("minor"), 0)
                if wd.get("weight") is not None:
                    common.want_int(f"{f}.weight", wd["weight"], 10, 1000)
                used = True
            for k in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                      "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
                for i, td in enumerate(common.want_list(f"{F}.blockIO.{k}", bio.get(k) or [])):
                    f = f"{F}.blockIO.{k}[{i}]"
                    common.want_dict(f, td)
                    common.want_int(f"{f}.major", td.get("major"), 0)
                    common.want_int(f"{f}.minor", td.get("minor"), 0)
                    common.want_int(f"{f}.rate", td.get("rate"), 0)
                    used = True
            if used:
                need("io", f"{F}.blockIO")
        hp = resources.get("hugepageLimits")
        if hp:
            common.want_hugepage_limits(f"{F}.hugepageLimits", hp)
            need("hugetlb", f"{F}.hugepageLimits")
        rdma = resources.get("rdma")
        if rdma:
            common.want_dict(f"{F}.rdma", rdma)
            for dev, lim in rdma.items():
                f = f"{F}.rdma.{dev}"
                if not dev or any(c.isspace() for c in dev):
                    raise ConfigError(f"{f}: invalid device name")
                common.want_dict(f, lim)
                for k in ("hcaHandles", "hcaObjects"):
                    if lim.get(k) is not None:
                        common.want_int(f"{f}.{k}", lim[k], 0)
            need("rdma", f"{F}.rdma")
        uni = resources.get("unified")
        if uni:
            common.want_dict(f"{F}.unified", uni)
            for k, v in uni.items():
                check_unified_key(k)
                if not isinstance(v, str):
                    raise ConfigError(f"{F}.unified.{k}: value must be a string")
        if resources.get("devices") is not None:
            from pyoci.cgroups import ebpf

            ebpf.emulate(device_rules(resources))

    # -- lifecycle ---------------------------------------------------------------------

    def leaves(self) -> list[str]:
        return [self.path]

    def owned(self) -> bool:
        return self.path in self.created

    def create(self) -> None:
        if os.path.isdir(self.path):
            self.found = len(common.read_procs_recursive(self.path))
        created: list[str] = []
        common.mkdir_p(self.path, created)
        for d in created:
            if d not in self.created:
                self.created.append(d)
        if self.owned():        # a cgroup that existed is used as it is
            self.enable_controllers()

    def enable_controllers(self) -> None:
        """Enable every available controller in the subtree_control of each ancestor of the
        container's cgroup, from the hierarchy root down (errors ignored, as runc: a
        controller that cannot be enabled fails later when its limit is written)."""
        rel = os.path.relpath(self.path, self.mountpoint)
        parts = [] if rel == "." else rel.split("/")
        cur = self.mountpoint
        for part in parts:
            ctrls = (common.read_opt(cur, "cgroup.controllers") or "").split()
            enabled = set((common.read_opt(cur, "cgroup.subtree_control") or "").split())
            todo = [c for c in ctrls if c not in enabled]
            if todo:
                try:
                    common.write_file(cur, "cgroup.subtree_control",
                                      " ".join("+" + c for c in todo))
                except SysError:
                    for c in todo:
                        try:
                            common.write_file(cur, "cgroup.subtree_control", "+" + c)
                        except SysError:
                            pass
            cur = os.path.join(cur, part)

    def add(self, pid: int) -> None:
        p = os.path.join(self.path, "cgroup.procs")
        for attempt in range(5):
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, str(pid).encode())
                finally:
                    os.close(fd)
                return
            except OSError as e:
                # EINVAL: the task may still be in TASK_NEW; runc retries too
                if e.errno == errno.EINVAL and attempt < 4:
                    time.sleep(0.03)
                    continue
                raise SysError(f"add pid {pid} to cgroup {self.path}: {e.strerror}") from None

    def destroy(self) -> None:
        """Remove the container's cgroup (and any cgroups below it) and the ancestors this
        manager created, deepest first; ancestors still in use by others are left."""
        if not self.created:
            return
        leaf_ours = self.path in self.created
        if leaf_ours:
            common.rmdir_tree(self.path)
        for d in sorted((c for c in self.created if c != self.path),
                        key=lambda s: s.count("/"), reverse=True):
            common.rmdir_parent(d)        # kept while other containers use it
        self.created = [c for c in self.created if os.path.isdir(c)]

    # -- resources ---------------------------------------------------------------------

    def apply(self, resources: dict | None) -> None:
        self.mine("linux.resources")
        if resources is None:
            resources = {}
        self.check(resources)
        F = "linux.resources"
        self._apply_pids(resources.get("pids") or {}, F)
        self._apply_memory(resources.get("memory") or {}, F)
        self._apply_io(resources.get("blockIO") or {}, F)
        self._apply_cpu(resources.get("cpu") or {}, F)
        self._apply_devices(resources)
        cpu = resources.get("cpu") or {}
        for k in ("cpus", "mems"):
            if cpu.get(k):
                self._write(f"cpuset.{k}", cpu[k], f"{F}.cpu.{k}")
        for i, h in enumerate(resources.get("hugepageLimits") or []):
            prefix = f"hugetlb.{h['pageSize']}"
            self._write(f"{prefix}.max", h["limit"], f"{F}.hugepageLimits[{i}]")
            if os.path.exists(os.path.join(self.path, f"{prefix}.rsvd.max")):
                self._write(f"{prefix}.rsvd.max", h["limit"], f"{F}.hugepageLimits[{i}]")
        for dev, lim in (resources.get("rdma") or {}).items():
            self._write("rdma.max", rdma_line(dev, lim), f"{F}.rdma.{dev}")
        self.apply_unified(resources.get("unified") or {})

    def _write(self, name: str, value: str | int, field: str) -> None:
        common.write_file(self.path, name, value, field)

    def _apply_pids(self, pids: dict, F: str) -> None:
        limit = pids.get("limit")
        if limit is None or limit == 0:
            return
        self._write("pids.max", limit if limit > 0 else "max", f"{F}.pids.limit")

    def _apply_memory(self, mem: dict, F: str) -> None:
        limit = mem.get("limit") or 0
        reservation = mem.get("reservation") or 0
        swap = mem.get("swap") or 0
        if not (limit or reservation or swap):
            return
        if mem.get("checkBeforeUpdate"):
            self.check_memory_usage(limit, swap)
        sw = memory_swap_to_v2(swap, limit)
        swap_str = num_to_str(sw)
        if swap_str == "" and sw == 0 and swap > 0:
            swap_str = "0"  # memory == memory+swap: no swap at all
        if swap_str:
            try:
                self._write("memory.swap.max", swap_str, f"{F}.memory.swap")
            except SysError:
                # without swap accounting the file is absent: "max"/"0" are no-ops then
                if os.path.exists(os.path.join(self.path, "memory.swap.max")) or \
                        swap_str not in ("max", "0"):
                    raise
        if num_to_str(limit):
            self._write("memory.max", num_to_str(limit), f"{F}.memory.limit")
        if num_to_str(reservation):
            self._write("memory.low", num_to_str(reservation), f"{F}.memory.reservation")

    def check_memory_usage(self, limit: int, swap: int) -> None:
        """checkBeforeUpdate: refuse a limit at or below the current usage."""
        usage = common.read_opt(self.path, "memory.current")
        if usage is None or not usage.isdigit():
            return
        cur = int(usage)
        if swap > 0 and swap <= cur:
            raise ConfigError(f"linux.resources.memory.swap: rejecting memory+swap limit "
                              f"{swap} <= usage {cur}")
        if limit > 0 and limit <= cur:
            raise ConfigError(f"linux.resources.memory.limit: rejecting memory limit "
                              f"{limit} <= usage {cur}")

    def _apply_io(self, bio: dict, F: str) -> None:
        weight = bio.get("weight") or 0
        bfq = os.path.exists(os.path.join(self.path, "io.bfq.weight"))
        if weight:
            if bfq:
                self._write("io.bfq.weight", weight, f"{F}.blockIO.weight")
            else:
                self._write("io.weight", blkio_weight_to_io_weight(weight),
                            f"{F}.blockIO.weight")
        if bfq:
            for i, wd in enumerate(bio.get("weightDevice") or []):
                if wd.get("weight"):
                    self._write("io.bfq.weight", f"{wd['major']}:{wd['minor']} {wd['weight']}",
                                f"{F}.blockIO.weightDevice[{i}]")
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for i, td in enumerate(bio.get(key) or []):
                self._write("io.max", f"{td['major']}:{td['minor']} {name}={td['rate']}",
                            f"{F}.blockIO.{key}[{i}]")

    def _apply_cpu(self, cpu: dict, F: str) -> None:
        shares = cpu.get("shares") or 0
        if shares:
            self._write("cpu.weight", cpu_shares_to_weight(shares), f"{F}.cpu.shares")
        burst = cpu.get("burst")
        retry_burst = False
        if burst is not None:
            try:
                self._write("cpu.max.burst", burst, f"{F}.cpu.burst")
            except SysError:
                # the kernel may refuse a burst above the current quota: retry after it
                if not cpu.get("quota"):
                    raise
                retry_burst = True
        cmax = cpu_max_value(cpu.get("quota"), cpu.get("period"))
        if cmax is not None:
            self._write("cpu.max", cmax, f"{F}.cpu.quota")
        if retry_burst and burst is not None:
            self._write("cpu.max.burst", burst, f"{F}.cpu.burst")
        if cpu.get("idle") is not None:
            self._write("cpu.idle", cpu["idle"], f"{F}.cpu.idle")

    def _apply_devices(self, resources: dict) -> None:
        """Install the device program at create time (no program yet) and whenever the
        resources name devices (update); otherwise leave the current program alone."""
        if self.rootless:
            return                  # as runc: device rules are not applied when rootless
        from pyoci.cgroups import ebpf

        try:
            present = any(name == ebpf.PROG_NAME
                          for _, name in ebpf.attached_programs(self.path))
        except (SysError, OSError):
            present = False
        if resources.get("devices") is None and present:
            return
        rules = device_rules(resources)
        try:
            ebpf.set_device_filter(self.path, rules)
        except (SysError, UnsupportedError):
            if not ebpf.skippable_error(rules):
                raise

    def apply_unified(self, unified: dict[str, str]) -> None:
        """Write linux.resources.unified: each key a file of the container's own cgroup
        (no '/' or '..', must already exist), each value written line by line."""
        for k, v in unified.items():
            check_unified_key(k)
            field = f"linux.resources.unified.{k}"
            p = os.path.join(self.path, k)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                ctrl = k.split(".", 1)[0]
                raise UnsupportedError(f"{field}: no such file in the container's cgroup "
                                       f"(is the {ctrl} controller enabled?)") from None
            except OSError as e:
                raise SysError(f"{field}: open {p}: {e.strerror}") from None
            try:
                lines = [ln for ln in str(v).split("\n") if ln.strip()] or [str(v)]
                for ln in lines:
                    try:
                        os.write(fd, ln.encode())
                    except OSError as e:
                        raise SysError(f"{field}: write {ln!r} to {p}: {e.strerror}") from None
            finally:
                os.close(fd)

    # -- freezer -----------------------------------------------------------------------

    def freeze(self) -> None:
        self.mine("pause")
        if not os.path.exists(os.path.join(self.path, "cgroup.freeze")):
            raise UnsupportedError("freezer not supported: no cgroup.freeze in "
                                   f"{self.path}")
        self._write("cgroup.freeze", "1", "")
        try:
            self.wait_frozen()
        except SysError:
            try:
                self._write("cgroup.freeze", "0", "")
            except SysError:
                pass
            raise

    def wait_frozen(self, tries: int = 1000, delay: float = 0.01) -> None:
        """Poll cgroup.events until it reports "frozen 1" (runc: 1000 x 10ms)."""
        for _ in range(tries):
            ev = common.read_keyed(self.path, "cgroup.events")
            if ev.get("frozen") == 1:
                return
            if common.read_opt(self.path, "cgroup.freeze") != "1":
                raise SysError(f"cgroup {self.path} was thawed while freezing")
            time.sleep(delay)
        raise SysError(f"timeout waiting for cgroup {self.path} to freeze")

    def thaw(self) -> None:
        self.mine("resume")
        if not os.path.exists(os.path.join(self.path, "cgroup.freeze")):
            return
        self._write("cgroup.freeze", "0", "")

    def frozen(self) -> bool:
        s = common.read_opt(self.path, "cgroup.freeze")
        if s != "1":
            return False
        return common.read_keyed(self.path, "cgroup.events").get("frozen") == 1

    # -- processes ---------------------------------------------------------------------

    def pids(self) -> list[int]:
        return common.read_procs_recursive(self.path)

    def kill_all(self, sig: int) -> None:
        self.mine("kill")
        if not os.path.isdir(self.path):
            return
        if sig == _signal.SIGKILL and os.path.exists(os.path.join(self.path, "cgroup.kill")):
            self._write("cgroup.kill", "1", "")
            return
        # Freeze so no new processes appear while we signal (runc does this for SIGKILL).
        can_freeze = (sig == _signal.SIGKILL
                      and os.path.exists(os.path.join(self.path, "cgroup.freeze"))
                      and not self.frozen())
        if can_freeze:
            try:
                self.freeze()
            except (SysError, UnsupportedError):
                can_freeze = False
        try:
            common.signal_each(self.pids(), sig)
        finally:
            if can_freeze:
                self.thaw()

    # -- stats -------------------------------------------------------------------------

    def oom_count(self) -> int:
        return common.read_keyed(self.path, "memory.events").get("oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        return cgroup_v2_stats(self.path, self.mountpoint)

    # -- state -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        d: dict[str, Any] = {"driver": self.driver, "path": self.path,
                             "mountpoint": self.mountpoint, "created": list(self.created)}
        if self.rootless:
            d["rootless"] = True
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> V2Manager:
        m = cls(d["path"], d.get("mountpoint", DEFAULT_MOUNTPOINT), d.get("created"))
        m.rootless = bool(d.get("rootless"))
        return m


def check_unified_key(k: object) -> None:
    """A linux.resources.unified key must name a file of the container's own cgroup:
    "<controller>.<parameter>", no '/', no '..'."""
    field = f"linux.resources.unified.{k}"
    if not isinstance(k, str) or not k:
        raise ConfigError("linux.resources.unified: keys must be non-empty strings")
    if "/" in k or "\0" in k:
        raise ConfigError(f"{field}: must be a file name (no slashes)")
    if ".." in k or k.startswith("."):
        raise ConfigError(f"{field}: must not contain '..'")
    if not common.unified_key_ok(k):
        raise ConfigError(f"{field}: must be in the form CONTROLLER.PARAMETER")


def cgroup_v2_stats(path: str, mountpoint: str = DEFAULT_MOUNTPOINT) -> dict[str, Any]:
    """runc's `events --stats` data for a cgroup v2 directory."""
    cpu_stat = common.read_keyed(path, "cpu.stat")
    cpu: dict[str, Any] = {
        "usage": {
            **_omit_zero({"total": cpu_stat.get("usage_usec", 0) * 1000}),
            "kernel": cpu_stat.get("system_usec", 0) * 1000,
            "user": cpu_stat.get("user_usec", 0) * 1000,
        },
        "throttling": _omit_zero({
            "periods": cpu_stat.get("nr_periods", 0),
            "throttledPeriods": cpu_stat.get("nr_throttled", 0),
            "throttledTime": cpu_stat.get("throttled_usec", 0) * 1000,
        }),
    }
    psi = parse_psi(common.read_opt(path, "cpu.pressure"))
    if psi is not None:
        cpu["psi"] = psi

    memory: dict[str, Any] = {}
    raw = common.read_keyed(path, "memory.stat")
    if raw.get("file"):
        memory["cache"] = raw["file"]
    usage = _mem_entry(path, "memory")
    swap_only = _mem_entry(path, "memory.swap")
    swap = dict(swap_only)
    # runc reports swap as memory+swap (v1 compatible); its peak cannot be combined
    swap["usage"] = swap_only["usage"] + usage["usage"]
    if swap_only["limit"] not in (0, MAX_UINT64):
        swap["limit"] = min(swap_only["limit"] + usage["limit"], MAX_UINT64)
    swap.pop("max", None)
    memory["usage"] = _omit_zero_keep(usage, ("limit", "failcnt"))
    memory["swap"] = _omit_zero_keep(swap, ("limit", "failcnt"))
    memory["kernel"] = {"limit": 0, "failcnt": 0}
    memory["kernelTCP"] = {"limit": 0, "failcnt": 0}
    if raw:
        memory["raw"] = raw
    mpsi = parse_psi(common.read_opt(path, "memory.pressure"))
    if mpsi is not None:
        memory["psi"] = mpsi
    events = common.read_keyed(path, "memory.events")
    memory["event_count"] = {k: events.get(k, 0)
                             for k in ("low", "high", "max", "oom", "oom_kill")}

    pids_current = common.read_opt(path, "pids.current")
    if pids_current is None:
        current = len(common.read_procs(path))
    else:
        current = int(pids_current or 0)
    pids_max = common.read_opt(path, "pids.max")
    limit = 0 if pids_max in (None, "", "max") else int(pids_max)
    pids = _omit_zero({"current": current, "limit": limit})

    blkio: dict[str, Any] = {}
    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    for line in (common.read_opt(path, "io.stat") or "").splitlines():
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[0]:
            continue
        try:
            major, minor = (int(x) for x in parts[0].split(":", 1))
        except ValueError:
            continue
        for item in parts[1:]:
            k, _, v = item.partition("=")
            if not v.isdigit():
                continue
            table = {"rbytes": (service_bytes, "Read"), "wbytes": (service_bytes, "Write"),
                     "rios": (serviced, "Read"), "wios": (serviced, "Write")}.get(k)
            if table is None:
                continue
            table[0].append(_omit_zero({"major": major, "minor": minor, "op": table[1],
                                        "value": int(v)}))
    if service_bytes:
        blkio["ioServiceBytesRecursive"] = service_bytes
    if serviced:
        blkio["ioServicedRecursive"] = serviced
    iopsi = parse_psi(common.read_opt(path, "io.pressure"))
    if iopsi is not None:
        blkio["psi"] = iopsi

    hugetlb: dict[str, Any] = {}
    for size in common.hugepage_sizes():
        cur = common.read_opt(path, f"hugetlb.{size}.current")
        if cur is None:
            continue
        ev = common.read_keyed(path, f"hugetlb.{size}.events")
        hugetlb[size] = {**_omit_zero({"usage": int(cur or 0)}), "failcnt": ev.get("max", 0)}

    return {
        "cpu": cpu,
        "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                   "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                   "memory_pressure": 0, "sched_load_balance": 0,
                   "sched_relax_domain_level": 0},
        "memory": memory,
        "pids": pids,
        "blkio": blkio,
        "hugetlb": hugetlb,
        "intel_rdt": {},
        "network_interfaces": None,
    }


def _mem_entry(path: str, prefix: str) -> dict[str, int]:
    """usage/limit/max of memory ("memory") or swap ("memory.swap"); limit "max" ->
    2^64-1 like runc; absent files read as 0 (absent limit as unlimited)."""
    cur = common.read_opt(path, f"{prefix}.current")
    if cur is None and prefix != "memory":
        # no swap accounting (CONFIG_MEMCG_SWAP off or swapaccount=0): all zero, as runc
        return {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}
    lim = common.read_opt(path, f"{prefix}.max")
    peak = common.read_opt(path, f"{prefix}.peak")
    return {
        "limit": MAX_UINT64 if lim in (None, "max") else int(lim),
        "usage": int(cur) if cur and cur.isdigit() else 0,
        "max": int(peak) if peak and peak.isdigit() else 0,
        "failcnt": 0,
    }


def _omit_zero_keep(d: dict, keep: tuple[str, ...]) -> dict:
    return {k: v for k, v in d.items() if k in keep or v not in (0, None)}
