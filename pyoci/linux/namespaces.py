"""Namespaces: new ones by unshare, existing ones by setns on their path, user namespace id
maps, time namespace offsets, and bringing loopback up in a new network namespace."""

from __future__ import annotations

import errno
import os

from pyoci.errors import SysError
from pyoci.linux import syscalls as sc
from pyoci.spec.config import NAMESPACES

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import IDMapping, TimeOffset

# The namespace types (the config's names) and their /proc/PID/ns/ names: one table, the
# config's (pyoci.spec.config.NAMESPACES).
PROC_NAME = NAMESPACES
FLAGS = {
    "user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}
# Join order: user first (it grants the rights for the rest), mount last (it changes how
# later paths resolve), as runc does.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def new_flags(ns: dict[str, str | None], exclude: tuple[str, ...] = ()) -> int:
    """unshare(2) flags for the namespaces the config asks to create (no path)."""
    flags = 0
    for t, path in ns.items():
        if path is None and t not in exclude:
            flags |= FLAGS[t]
    return flags


def open_paths(ns: dict[str, str | None]) -> list[tuple[str, int]]:
    """Open every namespace path up front (before any setns), in join order."""
    fds = []
    for t in JOIN_ORDER:
        path = ns.get(t)
        if path:
            try:
                fds.append((t, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise SysError(f"linux.namespaces: open {t} namespace {path}: "
                               f"{e.strerror}") from None
    return fds


def join(fds: list[tuple[str, int]], only: tuple[str, ...] | None = None) -> None:
    for t, fd in fds:
        if only is not None and t not in only:
            continue
        try:
            sc.setns(fd, FLAGS[t])
        except OSError as e:
            raise SysError(f"linux.namespaces: join {t} namespace: {e.strerror}") from None
        finally:
            os.close(fd)


def check_path_type(t: str, path: str) -> None:
    """The namespace file at path is of type t (create-time check)."""
    try:
        target = os.readlink(path) if os.path.islink(path) else None
    except OSError:
        target = None
    if not os.path.exists(path):
        raise SysError(f"linux.namespaces: {t} namespace path {path} does not exist")
    if target and not target.startswith(PROC_NAME[t] + ":"):
        raise SysError(f"linux.namespaces: {path} is a {target.split(':')[0]} namespace, "
                       f"not {t}")


def format_id_map(mappings: list[IDMapping]) -> bytes:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings).encode()


def write_id_maps(pid: int, uid_maps: list[IDMapping], gid_maps: list[IDMapping]) -> None:
    """Write /proc/PID/{uid,gid}_map for a process that just unshared a user namespace.

    As runc: a caller that is not root first writes "deny" to /proc/PID/setgroups when the
    gid mapping is exactly its own gid (the kernel demands it for an unprivileged gid_map),
    and a map the kernel refuses to an unprivileged writer (several ranges, ids other than
    its own) goes through the setuid helpers newuidmap/newgidmap, which check /etc/subuid
    and /etc/subgid."""
    rootless = os.geteuid() != 0
    if rootless and [(int(m.container_id), int(m.host_id), int(m.size))
                     for m in gid_maps] == [(0, os.getegid(), 1)]:
        try:
            with open(f"/proc/{pid}/setgroups", "wb", buffering=0) as f:
                f.write(b"deny")
        except OSError as e:
            raise SysError(f"linux.gidMappings: writing setgroups: {e.strerror}") from None
    for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
        field = "uidMappings" if name == "uid_map" else "gidMappings"
        try:
            with open(f"/proc/{pid}/{name}", "wb", buffering=0) as f:
                f.write(format_id_map(maps))
        except OSError as e:
            if not (rootless and e.errno == errno.EPERM):
                raise SysError(f"linux.{field}: writing {name}: {e.strerror}") from None
            map_with_helper("newuidmap" if name == "uid_map" else "newgidmap", pid, maps,
                            field)


def map_with_helper(tool: str, pid: int, maps: list[IDMapping], field: str) -> None:
    """Run newuidmap/newgidmap PID (containerID hostID size)... (package uidmap); their
    complaint (a range not granted by /etc/subuid or /etc/subgid...) is the error."""
    from pyoci.linux import spawn

    path = spawn.find(tool, os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                      ("/usr/bin", "/bin"))
    if path is None:
        raise SysError(f"linux.{field}: this mapping needs root or {tool} (package uidmap) "
                       f"with ranges in /etc/sub{'uid' if tool == 'newuidmap' else 'gid'}: "
                       f"{tool} not found in $PATH")
    argv = [tool, str(pid)]
    for m in maps:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    try:
        code, out = spawn.output(path, argv)
    except OSError as e:
        raise SysError(f"linux.{field}: run {path}: {e.strerror}") from None
    if code != 0:
        why = out.decode(errors="replace").strip().splitlines()
        raise SysError(f"linux.{field}: {tool} {pid} {' '.join(argv[2:])} failed"
                       + (f": {why[-1]}" if why else ""))


def write_time_offsets(offsets: dict[str, TimeOffset]) -> None:
    """linux.timeOffsets -> /proc/self/timens_offsets (before the first child of the ns)."""
    lines = []
    for clock in ("monotonic", "boottime"):
        o = offsets.get(clock)
        if o is not None:
            lines.append(f"{clock} {o.secs} {o.nanosecs}\n")
    if not lines:
        return
    try:
        with open("/proc/self/timens_offsets", "wb", buffering=0) as f:
            f.write("".join(lines).encode())
    except OSError as e:
        raise SysError(f"linux.timeOffsets: {e.strerror}") from None


def loopback_up() -> None:
    """Bring lo up in the (new) network namespace, with one ioctl: no netlink needed.
    The C modules only (`_socket`, `_struct`): `socket` costs milliseconds to import."""
    import _socket
    import _struct
    import fcntl

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        ifr = _struct.pack("16sH14x", b"lo", 0)
        flags = _struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()
