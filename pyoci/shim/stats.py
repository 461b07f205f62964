"""Stats: the cgroup statistics `pyoci events --stats` prints (runc's JSON) as containerd's
metrics, the message `ctr task metrics` and CRI read: io.containerd.cgroups.v1.Metrics on a
v1 or hybrid host, io.containerd.cgroups.v2.Metrics where /sys/fs/cgroup is cgroup2 alone
(as containerd chooses)."""

from __future__ import annotations

from pyoci.shim import pb

import os

METRICS_V1 = "io.containerd.cgroups.v1.Metrics"
METRICS_V2 = "io.containerd.cgroups.v2.Metrics"

# MemoryStatV2 fields that are memory.stat keys of the same name
_MEMORY_V2 = ("anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped",
              "file_dirty", "file_writeback", "anon_thp", "inactive_anon", "active_anon",
              "inactive_file", "active_file", "unevictable", "slab_reclaimable",
              "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
              "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
              "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed",
              "thp_fault_alloc", "thp_collapse_alloc")

# MemoryStat field <- memory.stat key
_MEMORY_RAW = {
    "cache": "cache", "rss": "rss", "rss_huge": "rss_huge", "mapped_file": "mapped_file",
    "dirty": "dirty", "writeback": "writeback", "pg_pg_in": "pgpgin", "pg_pg_out": "pgpgout",
    "pg_fault": "pgfault", "pg_maj_fault": "pgmajfault", "inactive_anon": "inactive_anon",
    "active_anon": "active_anon", "inactive_file": "inactive_file",
    "active_file": "active_file", "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_swap_limit": "hierarchical_memsw_limit",
}
_MEMORY_RAW.update({f"total_{k}": f"total_{v}" for k, v in list(_MEMORY_RAW.items())
                    if not k.startswith("hierarchical")})

# BlkIOStat field <- runc's blkio key
_BLKIO = {
    "io_service_bytes_recursive": "ioServiceBytesRecursive",
    "io_serviced_recursive": "ioServicedRecursive",
    "io_queued_recursive": "ioQueueRecursive",
    "io_service_time_recursive": "ioServiceTimeRecursive",
    "io_wait_time_recursive": "ioWaitTimeRecursive",
    "io_merged_recursive": "ioMergedRecursive",
    "io_time_recursive": "ioTimeRecursive",
    "sectors_recursive": "sectorsRecursive",
}

_U64 = (1 << 64) - 1


def _u(v) -> int:
    try:
        return max(0, min(int(v), _U64))
    except (TypeError, ValueError):
        return 0


def _entry(d: dict | None):
    d = d or {}
    return pb.MemoryEntry(limit=_u(d.get("limit")), usage=_u(d.get("usage")),
                          max=_u(d.get("max")), failcnt=_u(d.get("failcnt")))


def metrics(data: dict):
    m = pb.Metrics()
    cpu = data.get("cpu") or {}
    usage = cpu.get("usage") or {}
    thr = cpu.get("throttling") or {}
    m.cpu.usage.total = _u(usage.get("total"))
    m.cpu.usage.kernel = _u(usage.get("kernel"))
    m.cpu.usage.user = _u(usage.get("user"))
    m.cpu.usage.per_cpu.extend(_u(x) for x in usage.get("percpu") or [])
    m.cpu.throttling.periods = _u(thr.get("periods"))
    m.cpu.throttling.throttled_periods = _u(thr.get("throttledPeriods"))
    m.cpu.throttling.throttled_time = _u(thr.get("throttledTime"))
    mem = data.get("memory") or {}
    raw = mem.get("raw") or {}
    for field, key in _MEMORY_RAW.items():
        setattr(m.memory, field, _u(raw.get(key)))
    if mem.get("cache") and not raw.get("cache"):
        m.memory.cache = _u(mem["cache"])
    m.memory.usage.CopyFrom(_entry(mem.get("usage")))
    m.memory.swap.CopyFrom(_entry(mem.get("swap")))
    m.memory.kernel.CopyFrom(_entry(mem.get("kernel")))
    m.memory.kernel_tcp.CopyFrom(_entry(mem.get("kernelTCP")))
    pids = data.get("pids") or {}
    m.pids.current = _u(pids.get("current"))
    m.pids.limit = _u(pids.get("limit"))
    blkio = data.get("blkio") or {}
    for field, key in _BLKIO.items():
        getattr(m.blkio, field).extend(
            pb.BlkIOEntry(op=str(e.get("op", "")), major=_u(e.get("major")),
                          minor=_u(e.get("minor")), value=_u(e.get("value")))
            for e in blkio.get(key) or [])
    for size, h in sorted((data.get("hugetlb") or {}).items()):
        m.hugetlb.append(pb.HugetlbStat(pagesize=size, usage=_u(h.get("usage")),
                                        max=_u(h.get("max")), failcnt=_u(h.get("failcnt"))))
    return m


def metrics_v2(data: dict):
    m = pb.MetricsV2()
    cpu = data.get("cpu") or {}
    usage = cpu.get("usage") or {}
    thr = cpu.get("throttling") or {}
    m.cpu.usage_usec = _u(usage.get("total")) // 1000
    m.cpu.user_usec = _u(usage.get("user")) // 1000
    m.cpu.system_usec = _u(usage.get("kernel")) // 1000
    m.cpu.nr_periods = _u(thr.get("periods"))
    m.cpu.nr_throttled = _u(thr.get("throttledPeriods"))
    m.cpu.throttled_usec = _u(thr.get("throttledTime")) // 1000
    mem = data.get("memory") or {}
    raw = mem.get("raw") or {}
    for field in _MEMORY_V2:
        setattr(m.memory, field, _u(raw.get(field)))
    use = mem.get("usage") or {}
    swap = mem.get("swap") or {}           # runc's: memory + swap
    m.memory.usage = _u(use.get("usage"))
    m.memory.usage_limit = _u(use.get("limit"))
    m.memory.max_usage = _u(use.get("max"))
    m.memory.swap_usage = max(0, _u(swap.get("usage")) - _u(use.get("usage")))
    swap_limit = _u(swap.get("limit"))
    m.memory.swap_limit = swap_limit - _u(use.get("limit")) \
        if swap_limit and swap_limit != _U64 and swap_limit >= _u(use.get("limit")) \
        else swap_limit
    ev = mem.get("event_count") or {}
    for k in ("low", "high", "max", "oom", "oom_kill"):
        setattr(m.memory_events, k, _u(ev.get(k)))
    pids = data.get("pids") or {}
    m.pids.current = _u(pids.get("current"))
    m.pids.limit = _u(pids.get("limit"))
    devices: dict[tuple[int, int], object] = {}
    blkio = data.get("blkio") or {}
    for key, field in (("ioServiceBytesRecursive", "bytes"), ("ioServicedRecursive", "ios")):
        for e in blkio.get(key) or []:
            dev = (_u(e.get("major")), _u(e.get("minor")))
            entry = devices.get(dev)
            if entry is None:
                entry = devices[dev] = m.io.usage.add(major=dev[0], minor=dev[1])
            op = str(e.get("op", "")).lower()
            if op in ("read", "write"):
                setattr(entry, ("r" if op == "read" else "w") + field, _u(e.get("value")))
    for size, h in sorted((data.get("hugetlb") or {}).items()):
        m.hugetlb.append(pb.HugeTlbStatV2(pagesize=size, current=_u(h.get("usage"))))
    return m


def unified_host() -> bool:
    """cgroup2 alone at /sys/fs/cgroup (no v1 hierarchies)."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def metrics_any(data: dict, v2: bool | None = None):
    if unified_host() if v2 is None else v2:
        return pb.pack(METRICS_V2, metrics_v2(data))
    return pb.pack(METRICS_V1, metrics(data))
