"""cgroups: pick the driver for this host and rebuild managers from state.json.

- `mode()`: "v2" (cgroup2 mounted on /sys/fs/cgroup), "hybrid" (v1 controllers on a tmpfs
  plus cgroup2 on /sys/fs/cgroup/unified) or "v1".
- `new_manager(cgroups_path, cid, systemd=False)`: the v1 driver on v1 and hybrid hosts
  (it also joins the unified hierarchy there), the v2 driver on pure v2 hosts, the systemd
  driver when asked for.
- `from_state(d)`: the manager a later command (`kill`, `pause`, `delete`...) rebuilds from
  what `Manager.to_state()` stored, without touching the filesystem.

Drivers are imported lazily; importing this package costs nothing.
"""

from __future__ import annotations

from pyoci.cgroups.base import Manager
from pyoci.errors import SysError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"

# driver name -> (module, class); every class provides from_state() and for_container()
_DRIVERS = {
    "v1": ("pyoci.cgroups.v1", "V1Manager"),
    "v2": ("pyoci.cgroups.v2", "V2Manager"),
    "systemd": ("pyoci.cgroups.systemd", "SystemdManager"),
}

_mode: str | None = None


def mode() -> str:
    """"v1", "hybrid" or "v2", from the filesystem magic of /sys/fs/cgroup (cached)."""
    global _mode
    if _mode is None:
        from pyoci.cgroups import common as c

        if c.fs_magic(CGROUP_ROOT) == c.CGROUP2_SUPER_MAGIC:
            _mode = "v2"
        elif c.fs_magic(CGROUP_ROOT + "/unified") == c.CGROUP2_SUPER_MAGIC:
            _mode = "hybrid"
        else:
            _mode = "v1"
    return _mode


def _driver(name: str) -> Any:
    try:
        modname, clsname = _DRIVERS[name]
    except KeyError:
        raise SysError(f"cgroup state: unknown cgroup driver {name!r}") from None
    # __import__ rather than importlib.import_module: importlib costs an import of its own
    return getattr(__import__(modname, fromlist=[clsname]), clsname)


def new_manager(cgroups_path: str | None, cid: str, *, systemd: bool = False) -> Manager:
    """The manager for a new container: `linux.cgroupsPath` (None/"" for the default
    "<own cgroup>/<cid>") and the container id."""
    if systemd:
        name = "systemd"
    else:
        name = "v2" if mode() == "v2" else "v1"
    return _driver(name).for_container(cgroups_path, cid)


def from_state(d: dict[str, Any]) -> Manager:
    """Rebuild a manager from `Manager.to_state()` output, dispatching on d["driver"]."""
    if not isinstance(d, dict) or not isinstance(d.get("driver"), str):
        raise SysError("cgroup state: missing driver")
    return _driver(d["driver"]).from_state(d)


__all__ = ["Manager", "mode", "new_manager", "from_state"]
