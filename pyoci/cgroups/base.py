"""The one cgroup manager interface that create/exec/kill/delete/pause/resume/update/events/ps
use. Drivers: v1 (hybrid hosts, cgroupfs), v2 (unified, cgroupfs), systemd (transient scope).

A manager is built at create time from `linux.cgroupsPath` and the container id, serialised
into state.json with `to_state()`, and rebuilt by later commands with `from_state()` (without
touching the filesystem, so `state`/`kill` stay cheap).
"""

from __future__ import annotations

from pyoci.errors import SysError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class Manager:
    """Interface; drivers subclass it. All paths are absolute filesystem paths."""

    driver: str = "base"
    # add() is a plain, stateless cgroup.procs write that may run in a thread and be
    # repeated (create overlaps it with the children's setup); systemd's is not.
    join_in_background: bool = False

    # processes create() found in a container cgroup that existed before (None: pyoci made
    # every container cgroup): runc 1.1 warns "container's cgroup is not empty"
    found: int | None = None

    def leaves(self) -> list[str]:
        """The container's own cgroup directories (one per hierarchy)."""
        raise NotImplementedError

    def owned(self) -> bool:
        """Whether pyoci created every one of the container's cgroups (recorded in
        state.json). Only then does it write limits or device rules into them, freeze them,
        signal their members or remove them: a cgroup that existed before may hold
        processes that are not the container's."""
        raise NotImplementedError

    def mine(self, what: str) -> None:
        """SysError unless owned(): `what` (update, pause...) would act on a cgroup pyoci
        did not create."""
        if not self.owned():
            theirs = [d for d in self.leaves() if d not in getattr(self, "created", ())]
            raise SysError(f"{what}: cgroup {(theirs or self.leaves() or ['?'])[0]} was not "
                           f"created by pyoci (linux.cgroupsPath names an existing cgroup): "
                           f"pyoci does not change it")

    @classmethod
    def for_container(cls, cgroups_path: str | None, cid: str) -> Manager:
        """The manager for a new container: linux.cgroupsPath (absolute, relative to the
        caller's cgroup, or empty for the default <caller's cgroup>/<cid>) and its id."""
        raise NotImplementedError

    def check(self, resources: dict | None) -> None:
        """Validate `linux.resources` before anything is created (ConfigError naming the
        field, UnsupportedError for what this host/driver cannot do)."""
        raise NotImplementedError

    def create(self) -> None:
        """Create the cgroup(s) (parents too, enabling controllers where v2 needs it)."""
        raise NotImplementedError

    def add(self, pid: int) -> None:
        """Move pid into the container's cgroup(s)."""
        raise NotImplementedError

    def apply(self, resources: dict | None) -> None:
        """Write linux.resources (create time and `update`)."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        """True when the container's cgroup is frozen (status `paused`)."""
        raise NotImplementedError

    def kill_all(self, sig: int) -> None:
        """Signal every process in the cgroup (cgroup.kill for SIGKILL on v2 where present)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Host PIDs of every process in the cgroup (recursively)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Stats in runc's `events --stats` `data` shape (cpu, memory, pids, blkio, hugetlb...)."""
        raise NotImplementedError

    def oom_count(self) -> int:
        """Number of OOM kills seen so far (for `events` oom notifications)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the cgroup(s) created by create(), retrying while tasks drain. Never removes
        a cgroup this manager did not create."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable description, stored in state.json."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Manager:
        raise NotImplementedError
