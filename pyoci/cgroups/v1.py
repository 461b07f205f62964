"""cgroup v1 (and hybrid) cgroupfs driver, following runc's libcontainer/cgroups/fs.

The container gets one directory in every mounted v1 hierarchy (cpuset, devices, memory,
cpu, cpuacct, pids, blkio, hugetlb, net_cls, net_prio, perf_event, freezer, rdma, misc and
name=systemd, where mounted) and, on hybrid hosts, one in the unified (cgroup2) hierarchy,
which it joins as runc does and uses for hugetlb (when hugetlb is only a v2 controller),
`linux.resources.unified`, freezing when there is no v1 freezer, and cgroup.kill.

Only directories this manager created are ever removed.
"""

from __future__ import annotations

import _signal   # not signal, re: slow to import on every create
import errno
import os
import time

from pyoci.cgroups import common as c
from pyoci.cgroups.base import Manager
from pyoci.errors import ConfigError, SysError, UnsupportedError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

R = "linux.resources"

# Which v1 subsystem each linux.resources setting needs.
_CPU_KEYS = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "idle")
_MEM_KEYS = ("limit", "reservation", "swap", "swappiness", "disableOOMKiller")


class V1Manager(Manager):
    """Manager for cgroup v1 hosts and hybrid hosts (v1 controllers + a cgroup2 mount).

    paths: subsystem -> the container's directory in that hierarchy;
    unified: the container's directory in the cgroup2 hierarchy (hybrid), or None;
    created: directories create() made (outermost first), the only ones destroy() removes;
    devices_set: whether the device rules were written once (later apply() calls only
    rewrite them when `devices` is given, so `update` keeps the container's rules).
    """

    driver = "v1"
    join_in_background = True

    def __init__(self, paths: dict[str, str], unified: str | None = None,
                 created: list[str] | None = None, devices_set: bool = False):
        self.paths = dict(paths)
        self.unified = unified
        self.created = list(created or [])
        self.devices_set = devices_set
        self.rootless = False     # no device rules (runc ignores them when rootless)

    @classmethod
    def for_container(cls, cgroups_path: str | None, cid: str) -> V1Manager:
        """Build the manager for a container from `linux.cgroupsPath` and its id."""
        from pyoci.cgroups import paths as p

        mounts = p.cgroup_mounts()
        own = p.own_cgroups()
        return cls(p.v1_paths(cgroups_path, cid, mounts, own),
                   p.unified_path(cgroups_path, cid, mounts, own))

    def __repr__(self) -> str:
        return f"V1Manager(paths={self.paths!r}, unified={self.unified!r})"

    # --- state ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        d = {"driver": self.driver, "paths": dict(self.paths), "unified": self.unified,
             "created": list(self.created), "devices_set": self.devices_set}
        if self.rootless:
            d["rootless"] = True
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> V1Manager:
        if d.get("driver") != cls.driver:
            raise SysError(f"cgroup state: driver {d.get('driver')!r} is not {cls.driver!r}")
        m = cls(d.get("paths") or {}, d.get("unified"), d.get("created") or [],
                bool(d.get("devices_set")))
        m.rootless = bool(d.get("rootless"))
        return m

    # --- lifecycle -------------------------------------------------------------------------

    def leaves(self) -> list[str]:
        out = list(dict.fromkeys(self.paths.values()))
        if self.unified:
            out.append(self.unified)
        return out

    def owned(self) -> bool:
        return all(d in self.created for d in self.leaves())

    def create(self) -> None:
        created: list[str] = []
        existing = [d for d in self.leaves() if os.path.isdir(d)]
        if existing:
            self.found = len({pid for d in existing for pid in c.read_procs_recursive(d)})
        try:
            for sub, d in self.paths.items():
                if d in created:
                    continue
                first = len(created)
                c.mkdir_p(d, created)
                if sub == "cpuset":
                    for new in created[first:]:
                        _cpuset_inherit(new)
            if self.unified:
                c.mkdir_p(self.unified, created)
        finally:
            self.created.extend(x for x in created if x not in self.created)

    def add(self, pid: int) -> None:
        dirs = list(dict.fromkeys(self.paths.values()))
        if self.unified:
            dirs.append(self.unified)
        for d in dirs:
            e = c.try_write(d, "cgroup.procs", pid)
            if e == errno.ESRCH:
                raise SysError(f"add pid {pid} to cgroup {d}: no such process")
            if e:
                raise c.write_error(d, "cgroup.procs", pid, e, "cgroup")

    def destroy(self) -> None:
        leaves = set(self.paths.values())
        if self.unified:
            leaves.add(self.unified)
        first_error: SysError | None = None
        kept: list[str] = []
        for d in sorted(self.created, key=lambda s: s.count("/"), reverse=True):
            try:
                if d in leaves:
                    # the container's own cgroup: remove it and whatever the container made
                    # below it, waiting for exiting tasks to leave
                    c.rmdir_tree(d)
                elif not c.rmdir_parent(d):
                    # a parent we made: shared with other containers maybe; kept if busy
                    kept.append(d)
            except SysError as e:
                first_error = first_error or e
                kept.append(d)
        # what is left (busy parents, a failed removal) stays ours for a later destroy()
        self.created = [d for d in self.created if d in kept]
        if first_error:
            raise first_error

    # --- validation ----------------------------------------------------------------------

    def _need(self, sub: str, field: str) -> None:
        if sub not in self.paths:
            raise UnsupportedError(f"{field}: the {sub} cgroup controller is not mounted "
                                   f"on this host")

    def check(self, resources: dict | None) -> None:
        if resources is None:
            return
        r = c.want_dict(R, resources)
        mem = _section(r, "memory")
        if mem:
            self._check_memory(mem)
        cpu = _section(r, "cpu")
        if cpu:
            self._check_cpu(cpu)
        pids = _section(r, "pids")
        if pids and pids.get("limit") is not None:
            c.want_int(f"{R}.pids.limit", pids["limit"])
            self._need("pids", f"{R}.pids.limit")
        bio = _section(r, "blockIO")
        if bio:
            self._check_blkio(bio)
        huge = r.get("hugepageLimits")
        if huge:
            c.want_hugepage_limits(f"{R}.hugepageLimits", huge)
            if "hugetlb" not in self.paths and not self._unified_has("hugetlb"):
                raise UnsupportedError(f"{R}.hugepageLimits: the hugetlb cgroup controller "
                                       f"is not available on this host")
        net = _section(r, "network")
        if net:
            if net.get("classID") is not None:
                c.want_int(f"{R}.network.classID", net["classID"], 0, 2**32 - 1)
                self._need("net_cls", f"{R}.network.classID")
            if net.get("priorities"):
                for i, p in enumerate(c.want_list(f"{R}.network.priorities",
                                                  net["priorities"])):
                    f = f"{R}.network.priorities[{i}]"
                    c.want_dict(f, p)
                    if not isinstance(p.get("name"), str) or not p["name"]:
                        raise ConfigError(f"{f}.name: must be an interface name")
                    c.want_int(f"{f}.priority", p.get("priority"), 0, 2**32 - 1)
                self._need("net_prio", f"{R}.network.priorities")
        rdma = r.get("rdma")
        if rdma:
            for dev, lim in c.want_dict(f"{R}.rdma", rdma).items():
                c.want_dict(f"{R}.rdma.{dev}", lim)
                for k in ("hcaHandles", "hcaObjects"):
                    if lim.get(k) is not None:
                        c.want_int(f"{R}.rdma.{dev}.{k}", lim[k], 0, 2**32 - 1)
            self._need("rdma", f"{R}.rdma")
        if r.get("devices") is not None:
            rules = c.check_device_rules(r["devices"], f"{R}.devices")
            if rules:
                self._need("devices", f"{R}.devices")
        if r.get("unified"):
            self._check_unified(c.want_dict(f"{R}.unified", r["unified"]))

    def _check_memory(self, mem: dict) -> None:
        f = f"{R}.memory"
        for k in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
            if mem.get(k) is not None:
                c.want_int(f"{f}.{k}", mem[k], -1)
        if mem.get("swappiness") is not None:
            c.want_int(f"{f}.swappiness", mem["swappiness"], 0, 100)
        for k in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
            if mem.get(k) is not None:
                c.want_bool(f"{f}.{k}", mem[k])
        limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
        if limit > 0 and swap > 0 and swap < limit:
            raise ConfigError(f"{f}.swap: memory+swap limit {swap} must not be below "
                              f"memory.limit {limit}")
        if any(mem.get(k) not in (None, 0, False) for k in _MEM_KEYS):
            self._need("memory", f)

    def _check_cpu(self, cpu: dict) -> None:
        f = f"{R}.cpu"
        if cpu.get("shares") is not None:
            c.want_int(f"{f}.shares", cpu["shares"], 0)
        if cpu.get("quota") is not None:
            c.want_int(f"{f}.quota", cpu["quota"], -1)
        for k in ("period", "burst", "realtimePeriod"):
            if cpu.get(k) is not None:
                c.want_int(f"{f}.{k}", cpu[k], 0)
        if cpu.get("realtimeRuntime") is not None:
            c.want_int(f"{f}.realtimeRuntime", cpu["realtimeRuntime"], -1)
        if cpu.get("idle") is not None:
            c.want_int(f"{f}.idle", cpu["idle"], 0, 1)
        for k in ("cpus", "mems"):
            if cpu.get(k) is not None:
                c.want_cpulist(f"{f}.{k}", cpu[k])
                if cpu[k]:
                    self._need("cpuset", f"{f}.{k}")
        if any(cpu.get(k) not in (None, 0) for k in _CPU_KEYS):
            self._need("cpu", f)

    def _check_blkio(self, bio: dict) -> None:
        f = f"{R}.blockIO"
        for k in ("weight", "leafWeight"):
            if bio.get(k) is not None:
                c.want_int(f"{f}.{k}", bio[k], 0, 1000)
        for i, w in enumerate(c.want_list(f"{f}.weightDevice", bio.get("weightDevice") or [])):
            fi = f"{f}.weightDevice[{i}]"
            _check_majmin(fi, w)
            for k in ("weight", "leafWeight"):
                if w.get(k) is not None:
                    c.want_int(f"{fi}.{k}", w[k], 0, 1000)
        for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                    "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
            for i, t in enumerate(c.want_list(f"{f}.{key}", bio.get(key) or [])):
                _check_majmin(f"{f}.{key}[{i}]", t)
                c.want_int(f"{f}.{key}[{i}].rate", t.get("rate"), 0)
        if any(bio.get(k) for k in bio):
            self._need("blkio", f)

    def _check_unified(self, unified: dict) -> None:
        f = f"{R}.unified"
        for k, v in unified.items():
            if not isinstance(k, str) or not c.unified_key_ok(k) or ".." in k:
                raise ConfigError(f"{f}: invalid cgroup file name {k!r}")
            if not isinstance(v, str):
                raise ConfigError(f"{f}.{k}: value must be a string, not {v!r}")
        if self.unified is None:
            raise UnsupportedError(f"{f}: cannot use unified on a cgroup v1 host")
        for k in unified:
            ctrl = k.split(".", 1)[0]
            if ctrl != "cgroup" and not self._unified_has(ctrl):
                raise UnsupportedError(f"{f}.{k}: the {ctrl} controller is not available in "
                                       f"the unified hierarchy of this hybrid host")

    def _unified_root(self) -> str | None:
        if not self.unified:
            return None
        from pyoci.cgroups import paths as p

        m = p.unified_mount()
        return m.mountpoint if m else None

    def _unified_has(self, ctrl: str) -> bool:
        root = self._unified_root()
        if not root:
            return False
        return ctrl in (c.read_opt(root, "cgroup.controllers") or "").split()

    # --- resources ------------------------------------------------------------------------

    def apply(self, resources: dict | None) -> None:
        self.mine("linux.resources")
        r = resources if resources is not None else {}
        self.check(r)
        cpu = _section(r, "cpu") or {}
        self._apply_cpuset(cpu)
        self._apply_devices(r)
        self._apply_memory(_section(r, "memory"))
        self._apply_cpu(cpu)
        pids = _section(r, "pids")
        if pids and pids.get("limit") is not None:
            lim = pids["limit"]
            c.write_file(self.paths["pids"], "pids.max", lim if lim > 0 else "max",
                         f"{R}.pids.limit")
        self._apply_blkio(_section(r, "blockIO"))
        self._apply_hugetlb(r.get("hugepageLimits"))
        self._apply_network(_section(r, "network"))
        self._apply_rdma(r.get("rdma"))
        for k, v in (r.get("unified") or {}).items():
            self._write_unified(k, v)

    def _apply_cpuset(self, cpu: dict) -> None:
        for k in ("cpus", "mems"):
            if cpu.get(k):
                c.write_file(self.paths["cpuset"], f"cpuset.{k}", cpu[k], f"{R}.cpu.{k}")

    def _apply_memory(self, mem: dict | None) -> None:
        if not mem:
            return
        d = self.paths.get("memory")
        if d is None:
            return
        f = f"{R}.memory"
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        if limit > 0 and mem.get("checkBeforeUpdate"):
            usage = c.read_int(d, "memory.usage_in_bytes")
            if limit < usage:
                raise ConfigError(f"{f}.limit: {limit} is below the current memory usage "
                                  f"{usage} (checkBeforeUpdate)")
        has_swap = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
        if limit == -1 and swap == 0 and has_swap:
            swap = -1
        if swap and not has_swap:
            if swap != -1:
                raise UnsupportedError(f"{f}.swap: swap accounting is not enabled in this "
                                       f"kernel")
            swap = 0
        # as runc: raise memsw first when the new limits grow, so the kernel's
        # memory <= memory+swap check holds after every write
        if limit and swap and (swap == -1 or c.read_int(d, "memory.limit_in_bytes") < swap):
            self._set_memsw(d, swap)
            self._set_mem(d, limit)
        else:
            self._set_mem(d, limit)
            self._set_memsw(d, swap)
        if mem.get("reservation"):
            c.write_file(d, "memory.soft_limit_in_bytes", mem["reservation"],
                         f"{f}.reservation")
        if mem.get("swappiness") is not None:
            c.write_file(d, "memory.swappiness", mem["swappiness"], f"{f}.swappiness")
        if mem.get("disableOOMKiller") is not None:
            c.write_file(d, "memory.oom_control", int(mem["disableOOMKiller"]),
                         f"{f}.disableOOMKiller")
        if mem.get("useHierarchy"):
            # always on in current kernels; writing 1 is accepted, 0 is not: ignore false
            if os.path.exists(os.path.join(d, "memory.use_hierarchy")):
                c.write_file(d, "memory.use_hierarchy", 1, f"{f}.useHierarchy")
        # kernel and kernelTCP (kmem limits) are accepted and ignored, as in runc >= 1.0

    def _set_mem(self, d: str, limit: int) -> None:
        if not limit:
            return
        e = c.try_write(d, "memory.limit_in_bytes", limit)
        if e == errno.EBUSY:
            raise SysError(f"{R}.memory.limit: unable to set memory limit to {limit} "
                           f"(current usage: {c.read_int(d, 'memory.usage_in_bytes')}, "
                           f"peak usage: {c.read_int(d, 'memory.max_usage_in_bytes')})")
        if e:
            raise c.write_error(d, "memory.limit_in_bytes", limit, e, f"{R}.memory.limit")

    def _set_memsw(self, d: str, swap: int) -> None:
        if swap:
            c.write_file(d, "memory.memsw.limit_in_bytes", swap, f"{R}.memory.swap")

    def _apply_cpu(self, cpu: dict) -> None:
        d = self.paths.get("cpu")
        if d is None or all(cpu.get(k) is None for k in _CPU_KEYS):
            return
        f = f"{R}.cpu"
        if cpu.get("realtimePeriod"):
            c.write_file(d, "cpu.rt_period_us", cpu["realtimePeriod"], f"{f}.realtimePeriod")
        if cpu.get("realtimeRuntime"):
            c.write_file(d, "cpu.rt_runtime_us", cpu["realtimeRuntime"],
                         f"{f}.realtimeRuntime")
        shares = cpu.get("shares")
        if shares:
            c.write_file(d, "cpu.shares", shares, f"{f}.shares")
            got = c.read_int(d, "cpu.shares")
            if got != shares:
                side = "maximum" if shares > got else "minimum"
                raise ConfigError(f"{f}.shares: the {side} allowed cpu-shares is {got}")
        period, quota = cpu.get("period") or 0, cpu.get("quota") or 0
        retry_period = False
        if period:
            e = c.try_write(d, "cpu.cfs_period_us", period)
            if e == errno.EINVAL and quota:
                retry_period = True  # old quota/new period breaks the parent; retry below
            elif e:
                raise c.write_error(d, "cpu.cfs_period_us", period, e, f"{f}.period")
        if quota:
            c.write_file(d, "cpu.cfs_quota_us", quota, f"{f}.quota")
            if retry_period:
                c.write_file(d, "cpu.cfs_period_us", period, f"{f}.period")
        for key, name in (("burst", "cpu.cfs_burst_us"), ("idle", "cpu.idle")):
            if cpu.get(key) is not None:
                _write_if_supported(d, name, cpu[key], f"{f}.{key}")

    def _apply_blkio(self, bio: dict | None) -> None:
        if not bio or not any(bio.get(k) for k in bio):
            return
        d = self.paths["blkio"]
        f = f"{R}.blockIO"

        def pick(*names: str) -> str | None:
            for n in names:
                if os.path.exists(os.path.join(d, n)):
                    return n
            return None

        if bio.get("weight"):
            n = pick("blkio.weight", "blkio.bfq.weight")
            if n is None:
                raise UnsupportedError(f"{f}.weight: no blkio weight file (CFQ or BFQ) in {d}")
            c.write_file(d, n, bio["weight"], f"{f}.weight")
        if bio.get("leafWeight"):
            if pick("blkio.leaf_weight") is None:
                raise UnsupportedError(f"{f}.leafWeight: blkio.leaf_weight is not supported "
                                       f"by this kernel (CFQ was removed)")
            c.write_file(d, "blkio.leaf_weight", bio["leafWeight"], f"{f}.leafWeight")
        for i, w in enumerate(bio.get("weightDevice") or []):
            fi = f"{f}.weightDevice[{i}]"
            dev = f"{w['major']}:{w['minor']}"
            if w.get("weight"):
                n = pick("blkio.weight_device", "blkio.bfq.weight_device")
                if n is None:
                    raise UnsupportedError(f"{fi}.weight: no blkio weight_device file in {d}")
                c.write_file(d, n, f"{dev} {w['weight']}", f"{fi}.weight")
            if w.get("leafWeight"):
                if pick("blkio.leaf_weight_device") is None:
                    raise UnsupportedError(f"{fi}.leafWeight: blkio.leaf_weight_device is not "
                                           f"supported by this kernel")
                c.write_file(d, "blkio.leaf_weight_device", f"{dev} {w['leafWeight']}",
                             f"{fi}.leafWeight")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for i, t in enumerate(bio.get(key) or []):
                c.write_file(d, f"blkio.throttle.{name}", f"{t['major']}:{t['minor']} "
                             f"{t['rate']}", f"{f}.{key}[{i}]")

    def _apply_hugetlb(self, huge: list | None) -> None:
        if not huge:
            return
        for i, h in enumerate(huge):
            f = f"{R}.hugepageLimits[{i}]"
            size, limit = h["pageSize"], h["limit"]
            if "hugetlb" in self.paths:
                d = self.paths["hugetlb"]
                c.write_file(d, f"hugetlb.{size}.limit_in_bytes", limit, f)
                if os.path.exists(os.path.join(d, f"hugetlb.{size}.rsvd.limit_in_bytes")):
                    c.write_file(d, f"hugetlb.{size}.rsvd.limit_in_bytes", limit, f)
            else:
                assert self.unified
                self._enable_unified("hugetlb", f)
                c.write_file(self.unified, f"hugetlb.{size}.max", limit, f)
                if os.path.exists(os.path.join(self.unified, f"hugetlb.{size}.rsvd.max")):
                    c.write_file(self.unified, f"hugetlb.{size}.rsvd.max", limit, f)

    def _enable_unified(self, ctrl: str, field: str) -> None:
        """Enable a v2 controller for the container's unified cgroup: "+ctrl" in
        cgroup.subtree_control of each ancestor from the mount root down (skipping those
        where it already is)."""
        root = self._unified_root()
        assert self.unified and root
        chain = []
        d = os.path.dirname(self.unified)
        while len(d) >= len(root):
            chain.append(d)
            if d == root:
                break
            d = os.path.dirname(d)
        for anc in reversed(chain):
            if ctrl in (c.read_opt(anc, "cgroup.subtree_control") or "").split():
                continue
            e = c.try_write(anc, "cgroup.subtree_control", f"+{ctrl}")
            if e:
                raise c.write_error(anc, "cgroup.subtree_control", f"+{ctrl}", e, field)

    def _apply_network(self, net: dict | None) -> None:
        if not net:
            return
        if net.get("classID") is not None:
            c.write_file(self.paths["net_cls"], "net_cls.classid", net["classID"],
                         f"{R}.network.classID")
        for i, p in enumerate(net.get("priorities") or []):
            c.write_file(self.paths["net_prio"], "net_prio.ifpriomap",
                         f"{p['name']} {p['priority']}", f"{R}.network.priorities[{i}]")

    def _apply_rdma(self, rdma: dict | None) -> None:
        if not rdma:
            return
        for dev, lim in rdma.items():
            parts = [dev]
            if lim.get("hcaHandles") is not None:
                parts.append(f"hca_handle={lim['hcaHandles']}")
            if lim.get("hcaObjects") is not None:
                parts.append(f"hca_object={lim['hcaObjects']}")
            if len(parts) > 1:
                c.write_file(self.paths["rdma"], "rdma.max", " ".join(parts),
                             f"{R}.rdma.{dev}")

    def _write_unified(self, key: str, value: str) -> None:
        assert self.unified
        f = f"{R}.unified.{key}"
        ctrl = key.split(".", 1)[0]
        if ctrl != "cgroup" and not os.path.exists(os.path.join(self.unified, key)):
            self._enable_unified(ctrl, f)
        e = c.try_write(self.unified, key, value)
        if e == errno.ENOENT:
            raise UnsupportedError(f"{f}: no such cgroup v2 file in {self.unified}")
        if e:
            raise c.write_error(self.unified, key, value, e, f)

    # --- devices ------------------------------------------------------------------------

    def _apply_devices(self, r: dict) -> None:
        d = self.paths.get("devices")
        if d is None or self.rootless:
            return
        given = r.get("devices")
        if self.devices_set and given is None:
            return
        rules = list(given or []) + list(c.DEFAULT_DEVICE_RULES)
        target = device_state(rules)
        current = parse_devices_list(c.read_file(d, "devices.list"))
        for fname, rule in device_transition(current, target):
            e = c.try_write(d, fname, rule)
            if e:
                raise c.write_error(d, fname, rule, e, f"{R}.devices")
        if not target[0]:
            got = parse_devices_list(c.read_file(d, "devices.list"))
            if got != target:
                raise SysError(f"{R}.devices: {d}/devices.list does not match the requested "
                               f"rules after update")
        self.devices_set = True

    # --- freezer ------------------------------------------------------------------------

    def freeze(self) -> None:
        self.mine("pause")
        d = self.paths.get("freezer")
        if d:
            _freeze_v1(d)
        elif self.unified and os.path.exists(os.path.join(self.unified, "cgroup.freeze")):
            _freeze_v2(self.unified, True)
        else:
            raise UnsupportedError("pause: the freezer cgroup controller is not mounted")

    def thaw(self) -> None:
        self.mine("resume")
        d = self.paths.get("freezer")
        if d:
            c.write_file(d, "freezer.state", "THAWED", "resume")
            for _ in range(1000):
                if c.read_opt(d, "freezer.state") in ("THAWED", None):
                    return
                time.sleep(0.001)
                c.write_file(d, "freezer.state", "THAWED", "resume")
            raise SysError(f"resume: {d} did not thaw")
        elif self.unified and os.path.exists(os.path.join(self.unified, "cgroup.freeze")):
            _freeze_v2(self.unified, False)
        else:
            raise UnsupportedError("resume: the freezer cgroup controller is not mounted")

    def frozen(self) -> bool:
        d = self.paths.get("freezer")
        if d:
            for _ in range(1000):
                state = c.read_opt(d, "freezer.state")
                if state is None or state == "THAWED":
                    return False
                if state == "FROZEN":
                    # frozen itself, or only because an ancestor is?
                    return c.read_opt(d, "freezer.self_freezing") != "0"
                time.sleep(0.001)  # FREEZING: wait for a stable answer
            return False
        if self.unified:
            return c.read_keyed(self.unified, "cgroup.events").get("frozen") == 1
        return False

    def _can_freeze(self) -> bool:
        return "freezer" in self.paths or bool(
            self.unified and os.path.exists(os.path.join(self.unified, "cgroup.freeze")))

    # --- processes ------------------------------------------------------------------------

    def _procs_dir(self) -> str | None:
        for sub in ("pids", "freezer", "devices", "memory", "cpu", "cpuacct", "cpuset",
                    "blkio", "name=systemd"):
            if sub in self.paths:
                return self.paths[sub]
        if self.paths:
            return next(iter(self.paths.values()))
        return self.unified

    def pids(self) -> list[int]:
        d = self._procs_dir()
        return c.read_procs_recursive(d) if d else []

    def kill_all(self, sig: int) -> None:
        self.mine("kill")
        can_freeze = self._can_freeze()
        was_frozen = can_freeze and self.frozen()
        # hybrid: cgroup.kill in the unified hierarchy kills everything at once (as runc);
        # the freeze-and-signal loop below catches anything that only joined v1 cgroups
        if sig == _signal.SIGKILL and self.unified and not was_frozen:
            if c.try_write(self.unified, "cgroup.kill", 1) == 0:
                for _ in range(100):  # let the killed tasks leave the v1 hierarchies too
                    if not self.pids():
                        return
                    time.sleep(0.01)
        froze = False
        if can_freeze and not was_frozen:
            try:
                self.freeze()
                froze = True
            except SysError:
                pass
        try:
            c.signal_each(self.pids(), sig)
        finally:
            # a frozen task only acts on SIGKILL once thawed: thaw for it; otherwise
            # leave a paused container paused
            if froze or (was_frozen and sig == _signal.SIGKILL):
                try:
                    self.thaw()
                except SysError:
                    pass

    # --- stats --------------------------------------------------------------------------

    def oom_count(self) -> int:
        d = self.paths.get("memory")
        if not d:
            return 0
        return c.read_keyed(d, "memory.oom_control").get("oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        return {
            "cpu": self._cpu_stats(),
            "cpuset": self._cpuset_stats(),
            "memory": self._memory_stats(),
            "pids": _omit({"current": self._read("pids", "pids.current"),
                           "limit": self._read("pids", "pids.max")}),
            "blkio": self._blkio_stats(),
            "hugetlb": self._hugetlb_stats(),
            "intel_rdt": {},
            "network_interfaces": None,
        }

    def _read(self, sub: str, name: str) -> int:
        d = self.paths.get(sub)
        return c.read_int(d, name) if d else 0

    def _cpu_stats(self) -> dict[str, Any]:
        usage: dict[str, Any] = {}
        d = self.paths.get("cpuacct")
        if d:
            usage["total"] = c.read_int(d, "cpuacct.usage")
            usage["percpu"] = [int(x) for x in (c.read_opt(d, "cpuacct.usage_percpu")
                                                or "").split()]
            kern, user = [], []
            for line in (c.read_opt(d, "cpuacct.usage_all") or "").splitlines()[1:]:
                parts = line.split()
                if len(parts) == 3:
                    user.append(int(parts[1]))
                    kern.append(int(parts[2]))
            usage["percpu_kernel"] = kern
            usage["percpu_user"] = user
            ticks = c.read_keyed(d, "cpuacct.stat")
            hz = os.sysconf("SC_CLK_TCK") or 100
            usage["kernel"] = ticks.get("system", 0) * 1_000_000_000 // hz
            usage["user"] = ticks.get("user", 0) * 1_000_000_000 // hz
        usage = _omit(usage, keep=("kernel", "user"))
        usage.setdefault("kernel", 0)
        usage.setdefault("user", 0)
        thr: dict[str, Any] = {}
        if "cpu" in self.paths:
            st = c.read_keyed(self.paths["cpu"], "cpu.stat")
            thr = _omit({"periods": st.get("nr_periods", 0),
                         "throttledPeriods": st.get("nr_throttled", 0),
                         "throttledTime": st.get("throttled_time", 0)})
        return {"usage": usage, "throttling": thr}

    def _cpuset_stats(self) -> dict[str, Any]:
        d = self.paths.get("cpuset")
        if not d:
            return {}
        out: dict[str, Any] = {}
        cpus = _cpu_list(c.read_opt(d, "cpuset.cpus") or "")
        if cpus:
            out["cpus"] = cpus
        out["cpu_exclusive"] = c.read_int(d, "cpuset.cpu_exclusive")
        mems = _cpu_list(c.read_opt(d, "cpuset.mems") or "")
        if mems:
            out["mems"] = mems
        for k in ("mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                  "memory_spread_slab", "memory_pressure", "sched_load_balance",
                  "sched_relax_domain_level"):
            out[k] = c.read_int(d, f"cpuset.{k}")
        return out

    def _memory_stats(self) -> dict[str, Any]:
        d = self.paths.get("memory")
        if not d:
            return {}
        raw = c.read_keyed(d, "memory.stat")

        def entry(prefix: str) -> dict[str, int]:
            if not os.path.exists(os.path.join(d, f"{prefix}limit_in_bytes")):
                return {"limit": 0, "failcnt": 0}
            e = {"limit": c.read_int(d, f"{prefix}limit_in_bytes"),
                 "usage": c.read_int(d, f"{prefix}usage_in_bytes"),
                 "max": c.read_int(d, f"{prefix}max_usage_in_bytes"),
                 "failcnt": c.read_int(d, f"{prefix}failcnt")}
            return _omit(e, keep=("limit", "failcnt"))

        out: dict[str, Any] = {}
        if raw.get("cache"):
            out["cache"] = raw["cache"]
        out["usage"] = entry("memory.")
        out["swap"] = entry("memory.memsw.")
        out["kernel"] = entry("memory.kmem.")
        out["kernelTCP"] = entry("memory.kmem.tcp.")
        if raw:
            out["raw"] = raw
        return out

    def _blkio_stats(self) -> dict[str, Any]:
        d = self.paths.get("blkio")
        if not d:
            return {}
        groups = (
            (("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
             ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
            (("blkio.sectors_recursive", "sectorsRecursive"),
             ("blkio.io_service_bytes_recursive", "ioServiceBytesRecursive"),
             ("blkio.io_serviced_recursive", "ioServicedRecursive"),
             ("blkio.io_queued_recursive", "ioQueueRecursive"),
             ("blkio.io_service_time_recursive", "ioServiceTimeRecursive"),
             ("blkio.io_wait_time_recursive", "ioWaitTimeRecursive"),
             ("blkio.io_merged_recursive", "ioMergedRecursive"),
             ("blkio.time_recursive", "ioTimeRecursive")),
            (("blkio.throttle.io_serviced_recursive", "ioServicedRecursive"),
             ("blkio.throttle.io_service_bytes_recursive", "ioServiceBytesRecursive")),
            (("blkio.throttle.io_serviced", "ioServicedRecursive"),
             ("blkio.throttle.io_service_bytes", "ioServiceBytesRecursive")),
        )
        for group in groups:
            first = _blkio_entries(c.read_opt(d, group[0][0]) or "")
            if not first:
                continue
            out = {group[0][1]: first}
            for fname, key in group[1:]:
                entries = _blkio_entries(c.read_opt(d, fname) or "")
                if entries:
                    out[key] = entries
            return out
        return {}

    def _hugetlb_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        d = self.paths.get("hugetlb")
        for size in c.hugepage_sizes():
            if d:
                out[size] = _omit({"usage": c.read_int(d, f"hugetlb.{size}.usage_in_bytes"),
                                   "max": c.read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                                   "failcnt": c.read_int(d, f"hugetlb.{size}.failcnt")},
                                  keep=("failcnt",))
            elif self.unified and os.path.exists(
                    os.path.join(self.unified, f"hugetlb.{size}.current")):
                ev = c.read_keyed(self.unified, f"hugetlb.{size}.events")
                out[size] = _omit({"usage": c.read_int(self.unified, f"hugetlb.{size}.current"),
                                   "failcnt": ev.get("max", 0)}, keep=("failcnt",))
        return out


# --- helpers ---------------------------------------------------------------------------

def _section(r: dict, key: str) -> dict | None:
    v = r.get(key)
    if v is None:
        return None
    return c.want_dict(f"{R}.{key}", v)


def _check_majmin(field: str, v: object) -> None:
    c.want_dict(field, v)
    assert isinstance(v, dict)
    c.want_int(f"{field}.major", v.get("major"), 0)
    c.want_int(f"{field}.minor", v.get("minor"), 0)


def _omit(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Drop zero/empty values, like Go's `omitempty`, except for keys in keep."""
    return {k: v for k, v in d.items() if k in keep or v not in (0, None, [], "", {})}


def _write_if_supported(d: str, name: str, value: int, field: str) -> None:
    """Write value to d/name; where this kernel has no such file, only 0 (unset) is
    accepted."""
    if os.path.exists(os.path.join(d, name)):
        c.write_file(d, name, value, field)
    elif value:
        raise UnsupportedError(f"{field}: {name} is not supported by this kernel")


def _cpu_list(s: str) -> list[int]:
    """ "0-2,4" -> [0, 1, 2, 4]."""
    return [i for a, b in c.parse_ranges(s) for i in range(a, b + 1)]


def _blkio_entries(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] == "Total" or ":" not in parts[0]:
            continue
        ma, mi = parts[0].split(":", 1)
        e: dict[str, Any] = {"major": int(ma), "minor": int(mi)}
        if len(parts) == 3:
            e["op"] = parts[1]
            e["value"] = int(parts[2])
        elif len(parts) == 2:
            e["value"] = int(parts[1])
        else:
            continue
        out.append(_omit(e))
    return out


def _cpuset_inherit(d: str) -> None:
    """A new v1 cpuset cgroup starts with empty cpus/mems: copy them from the parent (runc's
    ensureParent) so tasks can join it."""
    parent = os.path.dirname(d)
    for k in ("cpuset.cpus", "cpuset.mems"):
        if not c.read_opt(d, k):
            v = c.read_opt(parent, k)
            if v:
                c.write_file(d, k, v, "cgroup cpuset")


def _freeze_v1(d: str) -> None:
    """Write FROZEN until freezer.state reads FROZEN (runc's loop: re-write while FREEZING,
    thaw and retry now and then to unstick tasks in uninterruptible sleep)."""
    for i in range(1000):
        if i % 50 == 49:
            c.write_file(d, "freezer.state", "THAWED", "pause")
            time.sleep(0.01)
        c.write_file(d, "freezer.state", "FROZEN", "pause")
        state = c.read_file(d, "freezer.state")
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise SysError(f"pause: unexpected freezer state {state!r} in {d}")
        time.sleep(0.001)
    c.try_write(d, "freezer.state", "THAWED")
    raise SysError(f"pause: unable to freeze {d}")


def _freeze_v2(d: str, on: bool) -> None:
    c.write_file(d, "cgroup.freeze", int(on), "pause" if on else "resume")
    for _ in range(2000):
        if c.read_keyed(d, "cgroup.events").get("frozen") == int(on):
            return
        time.sleep(0.001)
    raise SysError(f"{'pause' if on else 'resume'}: {d} did not "
                   f"{'freeze' if on else 'thaw'}")


# --- device rules (the v1 devices controller's own semantics) ---------------------------

DeviceState = tuple[bool, dict[tuple[str, str, str], frozenset]]


def device_state(rules: list[dict]) -> DeviceState:
    """What the kernel's devices controller holds after deny-all then `rules` in order:
    (allow_all, {(type, major, minor): access}). A rule of type "a" switches the default and
    clears the exceptions; other rules add to / remove from the exception list exactly as
    devices.allow / devices.deny do."""
    allow_all = False
    exc: dict[tuple[str, str, str], frozenset] = {}
    for r in rules:
        t = r.get("type", "a")
        if t == "a":
            allow_all = bool(r["allow"])
            exc = {}
            continue
        rule = c.device_rule_string(r).split()
        key = (t, *rule[1].split(":"))
        acc = frozenset(rule[2])
        # an allow in deny-by-default mode (or a deny in allow mode) adds an exception
        if bool(r["allow"]) != allow_all:
            exc[key] = exc.get(key, frozenset()) | acc
        elif key in exc:
            rest = exc[key] - acc
            if rest:
                exc[key] = rest
            else:
                del exc[key]
    return allow_all, exc


def parse_devices_list(text: str) -> DeviceState:
    """devices.list: "a *:* rwm" means allow-all (its exceptions are not listed)."""
    exc: dict[tuple[str, str, str], frozenset] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[0] == "a":
            return True, {}
        ma, mi = parts[1].split(":")
        exc[(parts[0], ma, mi)] = exc.get((parts[0], ma, mi), frozenset()) | set(parts[2])
    return False, exc


def _rule_str(key: tuple[str, str, str], acc: frozenset) -> str:
    return f"{key[0]} {key[1]}:{key[2]} {''.join(x for x in 'rwm' if x in acc)}"


def device_transition(current: DeviceState, target: DeviceState) -> list[tuple[str, str]]:
    """(file, rule) writes taking the cgroup from current to target. When both deny by
    default only the differences are written, so running processes never lose access to a
    device they keep; otherwise the default is reset first ("a" to devices.deny/allow)."""
    allow_all, exc = target
    if allow_all or current[0]:
        first = ("devices.allow", "a") if allow_all else ("devices.deny", "a")
        add = "devices.deny" if allow_all else "devices.allow"
        return [first] + [(add, _rule_str(k, a)) for k, a in sorted(exc.items())]
    writes: list[tuple[str, str]] = []
    cur = current[1]
    for k in sorted(set(cur) | set(exc)):
        extra = cur.get(k, frozenset()) - exc.get(k, frozenset())
        if extra:
            writes.append(("devices.deny", _rule_str(k, extra)))
    for k in sorted(set(cur) | set(exc)):
        missing = exc.get(k, frozenset()) - cur.get(k, frozenset())
        if missing:
            writes.append(("devices.allow", _rule_str(k, missing)))
    return writes
