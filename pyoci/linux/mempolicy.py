"""linux.memoryPolicy (runtime-spec 1.3): the NUMA memory policy of the container process,
set with set_mempolicy(2) in the init and inherited across execve."""

from __future__ import annotations

import ctypes
import os

from pyoci import TYPE_CHECKING
from pyoci.errors import ConfigError, SysError

if TYPE_CHECKING:
    from pyoci.spec.config import MemoryPolicy

SYS_set_mempolicy = 238
MODES = {
    "MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
    "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6,
}
FLAGS = {
    "MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
    "MPOL_F_STATIC_NODES": 1 << 15,
}


def parse_nodes(s: str, field: str = "linux.memoryPolicy.nodes") -> list[int]:
    nodes: list[int] = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"{field}: invalid node list {s!r}") from None
        if a < 0 or b < a or b > 4095:
            raise ConfigError(f"{field}: invalid node range {part!r}")
        nodes.extend(range(a, b + 1))
    return nodes


def check(policy: dict) -> None:
    mode = policy.get("mode")
    if mode not in MODES:
        raise ConfigError(f"linux.memoryPolicy.mode: unknown mode {mode!r}")
    for i, f in enumerate(policy.get("flags") or []):
        if f not in FLAGS:
            raise ConfigError(f"linux.memoryPolicy.flags[{i}]: unknown flag {f!r}")
    nodes = parse_nodes(policy.get("nodes") or "")
    if mode in ("MPOL_DEFAULT", "MPOL_LOCAL") and nodes:
        raise ConfigError(f"linux.memoryPolicy.nodes: must be empty for {mode}")
    if mode in ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY",
                "MPOL_WEIGHTED_INTERLEAVE") and not nodes:
        raise ConfigError(f"linux.memoryPolicy.nodes: required for {mode}")


def apply(policy: MemoryPolicy) -> None:
    mode = MODES[policy.mode]
    for f in policy.flags:
        mode |= FLAGS[f]
    nodes = parse_nodes(policy.nodes)
    maxnode = (max(nodes) + 1 if nodes else 0)
    words = (maxnode + 63) // 64 or 1
    mask = (ctypes.c_ulong * words)()
    for n in nodes:
        mask[n // 64] |= 1 << (n % 64)
    from pyoci.linux import syscalls

    r = syscalls.libc.syscall(SYS_set_mempolicy, mode, mask if nodes else None,
                     ctypes.c_ulong(maxnode + 1 if nodes else 0))
    if r < 0:
        raise SysError(f"linux.memoryPolicy: set_mempolicy: {os.strerror(ctypes.get_errno())}")
