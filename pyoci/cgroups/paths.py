"""Where a container's cgroups live, following runc's cgroupfs rules:

- `linux.cgroupsPath` absolute ("/a/b"): relative to each hierarchy's mount point;
- relative ("a/b"): relative to the calling process's own cgroup in each hierarchy
  (from /proc/self/cgroup, translated through the mount's root);
- empty or absent: "<caller's own cgroup>/<container id>" (runc sets Name=id, Path="", which
  joins to the relative inner path "<id>").

Paths are cleaned like runc's CleanPath, so a relative path can never climb above the
caller's cgroup with "..".

All of pyoci's cgroup path handling is here: the cgroup mounts (from pyoci.linux.mountinfo's
parser), this process's own cgroups (/proc/self/cgroup), CleanPath (also under the
container paths of pyoci.linux.resolve), and the hierarchies a `cgroup` mount shows inside a
container (pyoci.linux.mounts).
"""

from __future__ import annotations

import posixpath

from pyoci.cgroups.common import is_within
from pyoci.errors import ConfigError
from pyoci.linux.mountinfo import parse_mountinfo

# v1 subsystems a container joins, in the order runc's fs manager uses.
V1_SUBSYSTEMS: tuple[str, ...] = (
    "cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb",
    "net_cls", "net_prio", "perf_event", "freezer", "rdma", "misc", "name=systemd",
)


class CgroupMount(tuple):
    """One cgroup mount, a tuple with named fields (as a namedtuple; `collections` and
    `typing` are slow to import): mountpoint; root, the cgroup path mounted there ("/" on
    the host); fstype, "cgroup" or "cgroup2"; controllers, v1 {"cpu", "cpuacct"} or
    {"name=systemd"}, v2 empty (a frozenset)."""

    __slots__ = ()

    def __new__(cls, mountpoint: str, root: str, fstype: str, controllers: frozenset):
        return tuple.__new__(cls, (mountpoint, root, fstype, controllers))

    mountpoint = property(lambda self: self[0])
    root = property(lambda self: self[1])
    fstype = property(lambda self: self[2])
    controllers = property(lambda self: self[3])

    def __repr__(self) -> str:
        return ("CgroupMount(mountpoint=%r, root=%r, fstype=%r, controllers=%r)"
                % tuple(self))


def clean_path(p: str | None) -> str:
    """runc's CleanPath: lexical clean; a relative path is confined as if rooted at "/"."""
    if not p:
        return ""
    p = posixpath.normpath(p)
    if p.startswith("//"):      # POSIX keeps a leading "//"; Go's filepath.Clean does not
        p = "/" + p.lstrip("/")
    if not p.startswith("/"):
        p = posixpath.relpath(posixpath.normpath("/" + p), "/")
    return posixpath.normpath(p)


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[CgroupMount]:
    """Every cgroup/cgroup2 mount visible to this process (first mount of each kept first)."""
    out = []
    for mi in parse_mountinfo(mountinfo):
        if mi["fstype"] not in ("cgroup", "cgroup2"):
            continue
        ctrls: frozenset = frozenset()
        if mi["fstype"] == "cgroup":
            ctrls = frozenset(o for o in mi["super_options"]
                              if o in V1_SUBSYSTEMS or o.startswith("name=")
                              or o in ("net_cls", "net_prio"))
        out.append(CgroupMount(mi["mountpoint"], mi["root"], mi["fstype"], ctrls))
    return out


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per controller: {"cpu": "/", "memory": "/x", "": "/"}; the
    unified (v2) hierarchy is keyed "" and named hierarchies "name=systemd"."""
    return {c: path for key, path in own_hierarchies(proc_cgroup).items()
            for c in (key.split(",") if key else [""])}


def own_hierarchies(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """/proc/self/cgroup as {controller-list: path}: {"cpu,cpuacct": "/x", "": "/"}; "" is
    the unified (v2) hierarchy."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
    return out


def v1_mounts(mounts: list[CgroupMount] | None = None) -> dict[str, CgroupMount]:
    """Mounted v1 hierarchies by subsystem (co-mounted subsystems share one entry)."""
    out: dict[str, CgroupMount] = {}
    for m in mounts if mounts is not None else cgroup_mounts():
        if m.fstype != "cgroup":
            continue
        for c in m.controllers:
            out.setdefault(c, m)
    return out


def unified_mount(mounts: list[CgroupMount] | None = None) -> CgroupMount | None:
    """The cgroup2 mount (hybrid: /sys/fs/cgroup/unified), if any."""
    for m in mounts if mounts is not None else cgroup_mounts():
        if m.fstype == "cgroup2":
            return m
    return None


def inner_path(cgroups_path: str | None, cid: str) -> str:
    """The container's cgroup path before resolving it against a hierarchy: the cleaned
    cgroupsPath, or the container id when it is empty (runc's Name=id).

    A cgroupsPath that climbs with ".." above where it starts (the hierarchy root, or the
    caller's cgroup for a relative path), or that names the hierarchy root ("/", "//") or
    the caller's own cgroup (".") is refused: runc cleans such paths and places the
    container there, and its device rules and `kill --all` then reach host processes."""
    if cgroups_path is not None and not isinstance(cgroups_path, str):
        raise ConfigError(f"linux.cgroupsPath: must be a string, not {cgroups_path!r}")
    if cgroups_path:
        check_escape(cgroups_path)
    inner = clean_path(cgroups_path)
    if cgroups_path and inner in ("/", ".", ""):
        what = "the root of every cgroup hierarchy" if inner == "/" else "pyoci's own cgroup"
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} names {what}")
    if not inner:
        if not cid or "/" in cid or cid in (".", ".."):
            raise ConfigError(f"container id {cid!r} cannot name a cgroup")
        inner = cid
    return inner


def check_escape(cgroups_path: str) -> None:
    """ConfigError when a ".." component of cgroupsPath climbs above its starting point."""
    if "\0" in cgroups_path:
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} contains a NUL byte")
    depth = 0
    for part in cgroups_path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                top = ("the cgroup hierarchy root" if cgroups_path.startswith("/")
                       else "the caller's cgroup")
                raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} climbs above {top} "
                                  f"with '..'")
        elif part not in ("", "."):
            depth += 1


def check_resolved(cgroups_path: str | None, path: str, m: CgroupMount,
                   own: str | None) -> None:
    """ConfigError when the container's directory `path` in the hierarchy mounted at m is
    the hierarchy's root, or the caller's own cgroup there (`own`), or one of its ancestors:
    the container would share its cgroup with the host or with pyoci itself."""
    field = f"linux.cgroupsPath: {cgroups_path!r}" if cgroups_path else "linux.cgroupsPath"
    mount = posixpath.normpath(m.mountpoint)
    if path == mount:
        raise ConfigError(f"{field} resolves to {path}, the root of a cgroup hierarchy")
    if not is_within(path, mount):
        raise ConfigError(f"{field} resolves to {path}, outside the cgroup hierarchy at "
                          f"{mount}")
    mine = resolve(m, own, ".")
    if mine == path:
        raise ConfigError(f"{field} resolves to {path}, pyoci's own cgroup")
    if mine != mount and is_within(mine, path):
        raise ConfigError(f"{field} resolves to {path}, an ancestor of pyoci's own cgroup "
                          f"{mine}")


def resolve(m: CgroupMount, own: str | None, inner: str) -> str:
    """Absolute filesystem path of `inner` in the hierarchy mounted at m, given this
    process's own cgroup `own` in that hierarchy."""
    if inner.startswith("/"):
        return posixpath.normpath(m.mountpoint + inner)
    own = own or "/"
    rel = posixpath.relpath(own, m.root)
    if rel.startswith(".."):  # our cgroup is outside what is mounted: use the mount root
        rel = "."
    base = posixpath.normpath(posixpath.join(m.mountpoint, rel))
    return posixpath.normpath(posixpath.join(base, inner))


def v1_paths(cgroups_path: str | None, cid: str,
             mounts: list[CgroupMount] | None = None,
             own: dict[str, str] | None = None) -> dict[str, str]:
    """Per-subsystem directories of the container in every mounted v1 hierarchy."""
    inner = inner_path(cgroups_path, cid)
    own = own if own is not None else own_cgroups()
    out = {}
    for sub, m in v1_mounts(mounts).items():
        out[sub] = resolve(m, own.get(sub), inner)
        check_resolved(cgroups_path, out[sub], m, own.get(sub))
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def unified_path(cgroups_path: str | None, cid: str,
                 mounts: list[CgroupMount] | None = None,
                 own: dict[str, str] | None = None) -> str | None:
    """The container's directory in the cgroup2 hierarchy (None if none is mounted)."""
    m = unified_mount(mounts)
    if m is None:
        return None
    own = own if own is not None else own_cgroups()
    path = resolve(m, own.get(""), inner_path(cgroups_path, cid))
    check_resolved(cgroups_path, path, m, own.get(""))
    return path


def _order(sub: str) -> int:
    try:
        return V1_SUBSYSTEMS.index(sub)
    except ValueError:
        return len(V1_SUBSYSTEMS)


def own_dir(subsystem: str) -> str | None:
    """The calling process's own cgroup directory in a v1 subsystem ("" = unified)."""
    mounts = cgroup_mounts()
    m = unified_mount(mounts) if subsystem == "" else v1_mounts(mounts).get(subsystem)
    if m is None:
        return None
    return resolve(m, own_cgroups().get(subsystem), ".")


# --- the hierarchies a `cgroup` mount shows in a container (pyoci.linux.mounts) ---------

def _v1_key(super_options: list[str], own: dict[str, str]) -> str | None:
    """The /proc/self/cgroup key of a v1 hierarchy mounted with these super options."""
    opts = set(super_options)
    for key in own:
        if key and set(key.split(",")) <= opts:
            return key
    return None


def cgroup_hierarchies(infos: list[dict] | None = None, rootfs: str | None = None) -> list[dict]:
    """The host's cgroup hierarchies (v1 and v2), each once, with the path of this process's
    own cgroup in each: [{mountpoint, fstype, root, own, options}]. Mounts under rootfs
    (copies the config bound there, e.g. the host's /sys) are not the host's."""
    infos = parse_mountinfo() if infos is None else infos
    if rootfs:
        root = rootfs.rstrip("/")
        infos = [mi for mi in infos if mi["mountpoint"] != root
                 and not mi["mountpoint"].startswith(root + "/")]
    own = own_hierarchies()
    seen: set[str] = set()
    out = []
    for mi in infos:
        if mi["fstype"] not in ("cgroup", "cgroup2"):
            continue
        if mi["fstype"] == "cgroup2":
            key: str | None = ""
        else:
            key = _v1_key(mi["super_options"], own)
        # one entry per hierarchy (its /proc/self/cgroup key), not per mountpoint: a
        # hierarchy is also seen where the config bound the host's /sys into the rootfs
        if key is None or key not in own or key in seen:
            continue
        seen.add(key)
        out.append({"mountpoint": mi["mountpoint"], "fstype": mi["fstype"], "root": mi["root"],
                    "own": own[key], "options": key.split(",") if key else []})
    return out


def cgroup2_only(infos: list[dict] | None = None) -> bool:
    """True on a unified host (cgroup2 mounted on /sys/fs/cgroup)."""
    infos = parse_mountinfo() if infos is None else infos
    return any(mi["mountpoint"] == "/sys/fs/cgroup" and mi["fstype"] == "cgroup2"
               for mi in infos)


def hierarchy_dir(h: dict) -> str:
    """This process's own cgroup directory in a hierarchy of cgroup_hierarchies()."""
    return resolve(CgroupMount(h["mountpoint"], h["root"], h["fstype"], frozenset()),
                   h["own"], ".")


__all__ = [
    "CgroupMount", "V1_SUBSYSTEMS", "clean_path", "cgroup_mounts", "own_cgroups",
    "v1_mounts", "unified_mount", "inner_path", "resolve", "v1_paths", "unified_path",
    "own_dir", "is_within", "check_escape", "check_resolved", "own_hierarchies",
    "cgroup_hierarchies", "cgroup2_only", "hierarchy_dir",
]
