"""mounts[]: each entry parsed the way runc parses it (options into MS_* flags, propagation,
recursive mount_setattr attributes, idmap, tmpcopyup), checked at create, and mounted under
the rootfs before pivot_root: bind mounts (id-mapped or not, sources opened on the host
side for a container in a user namespace), filesystems (tmpfs with tmpcopyup, proc, sysfs,
...) and `cgroup` mounts (cgroup2, or a tmpfs of v1 hierarchies). Targets are resolved
inside the rootfs (pyoci.linux.resolve). Relative bind sources are relative to `bundle`
when given, else to the current directory. The whole-rootfs sequence is pyoci.linux.rootfs."""

from __future__ import annotations

import errno
import os
import stat
from pyoci.record import dataclass, field

from pyoci.cgroups import paths as cgpaths
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux import mountinfo, syscalls as sc
from pyoci.spec import config
from pyoci.linux.resolve import (clean_path, create_target, fd_path, mkdir_all_in_root,
                                 open_in_root, open_mounted, real_path_in_root)


# option -> (clear?, MS_* flag), as runc's specconv parses mounts[].options
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID), "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV), "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC), "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS), "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK), "nomand": (True, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "atime": (True, sc.MS_NOATIME),
    "nodiratime": (False, sc.MS_NODIRATIME), "diratime": (True, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME), "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME), "nolazytime": (True, sc.MS_LAZYTIME),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "iversion": (False, sc.MS_I_VERSION), "noiversion": (True, sc.MS_I_VERSION),
    "silent": (False, sc.MS_SILENT), "loud": (True, sc.MS_SILENT),
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
}


PROPAGATION_OPTIONS: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


# option -> (clear?, MOUNT_ATTR_*), applied with mount_setattr(AT_RECURSIVE)
RECURSIVE_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, sc.MOUNT_ATTR_RDONLY), "rrw": (True, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, sc.MOUNT_ATTR_NOSUID), "rsuid": (True, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (False, sc.MOUNT_ATTR_NODEV), "rdev": (True, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (False, sc.MOUNT_ATTR_NOEXEC), "rexec": (True, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, sc.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, sc.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, sc.MOUNT_ATTR_RELATIME), "rnorelatime": (True, sc.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, sc.MOUNT_ATTR_NOATIME), "ratime": (True, sc.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, sc.MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, sc.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, sc.MOUNT_ATTR_NOSYMFOLLOW),
}

# statvfs f_flag bits -> MS_* (they differ for relatime and nosymfollow)
_ST_TO_MS = {
    os.ST_RDONLY: sc.MS_RDONLY, os.ST_NOSUID: sc.MS_NOSUID, os.ST_NODEV: sc.MS_NODEV,
    os.ST_NOEXEC: sc.MS_NOEXEC, os.ST_NOATIME: sc.MS_NOATIME,
    os.ST_NODIRATIME: sc.MS_NODIRATIME, os.ST_RELATIME: sc.MS_RELATIME,
    0x2000: sc.MS_NOSYMFOLLOW,
}
_ATIME_FLAGS = sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME
_DEFAULT_CGROUP_FLAGS = sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV

# where runc lets a non-proc mount go inside /proc (lxcfs-style emulation)
_PROC_MOUNT_ALLOWED = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat",
                       "/proc/swaps", "/proc/uptime", "/proc/loadavg", "/proc/slabinfo",
                       "/proc/net/dev", "/proc/sys/kernel/ns_last_pid")


@dataclass
class Mount:
    """One mounts[] entry, parsed."""

    index: int
    destination: str            # normalised absolute path inside the container
    type: str | None
    source: str | None
    flags: int = 0              # MS_* for mount(2)
    propagation: list[int] = field(default_factory=list)
    attr_set: int = 0           # MOUNT_ATTR_* applied recursively
    attr_clr: int = 0
    data: str = ""
    idmap: bool = False
    ridmap: bool = False
    copyup: bool = False
    uid_mappings: list[config.IDMapping] = field(default_factory=list)
    gid_mappings: list[config.IDMapping] = field(default_factory=list)

    @property
    def bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def where(self) -> str:
        return f"mounts[{self.index}]"


# --- parsing and validation ---------------------------------------------------------------


def parse_mount(m: dict, index: int) -> Mount:
    """Check the config.json object mounts[index] (ConfigError names the offending field)
    and parse it (entry)."""
    where = f"mounts[{index}]"
    if not isinstance(m, dict):
        raise ConfigError(f"{where}: must be an object")
    dest = m.get("destination")
    if not isinstance(dest, str) or not dest:
        raise ConfigError(f"{where}.destination: must be a non-empty string")
    for key in ("type", "source"):
        if key in m and not isinstance(m[key], str):
            raise ConfigError(f"{where}.{key}: must be a string")
    opts = m.get("options") or []
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        raise ConfigError(f"{where}.options: must be an array of strings")
    for key in ("uidMappings", "gidMappings"):
        _check_mappings(m, key, where)
    return entry(config.Mount.parse(m), index)


def entry(m: config.Mount, index: int) -> Mount:
    """mounts[index] parsed the way runc does: options into flags, propagation, recursive
    attributes, data."""
    where = f"mounts[{index}]"
    mnt = Mount(index=index, destination=clean_path(m.destination), type=m.type or None,
                source=m.source or None)
    if mnt.type == "bind":
        mnt.flags |= sc.MS_BIND
    data: list[str] = []
    unknown: list[str] = []
    for o in m.options:
        if o in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[o]
            mnt.flags = mnt.flags & ~flag if clear else mnt.flags | flag
        elif o in PROPAGATION_OPTIONS:
            mnt.propagation.append(PROPAGATION_OPTIONS[o])
        elif o in RECURSIVE_OPTIONS:
            clear, attr = RECURSIVE_OPTIONS[o]
            if attr & sc.MOUNT_ATTR__ATIME == attr:
                # atime settings are an enum: always clear the whole field, then set one
                mnt.attr_clr |= sc.MOUNT_ATTR__ATIME
                if not clear:
                    mnt.attr_set = (mnt.attr_set & ~sc.MOUNT_ATTR__ATIME) | attr
                else:
                    mnt.attr_set &= ~sc.MOUNT_ATTR__ATIME
            elif clear:
                mnt.attr_clr |= attr
                mnt.attr_set &= ~attr
            else:
                mnt.attr_set |= attr
                mnt.attr_clr &= ~attr
        elif o == "tmpcopyup":
            mnt.copyup = True
        elif o == "idmap":
            mnt.idmap = True
        elif o == "ridmap":
            mnt.idmap = mnt.ridmap = True
        else:
            data.append(o)
            unknown.append(o)
    if mnt.type == "bind" or mnt.flags & sc.MS_BIND:
        mnt.flags |= sc.MS_BIND
        if unknown:
            # filesystem data (mode=755, size=1k, ...) means nothing to a bind mount: runc
            # ignores it, and so do clients' configs (runtime-tools adds it to every mount)
            from pyoci import log

            log.debug("%s.options: ignoring %s for a bind mount", where, ",".join(unknown))
            data = []
    mnt.data = ",".join(data)
    mnt.uid_mappings = m.uid_mappings
    mnt.gid_mappings = m.gid_mappings
    if (mnt.uid_mappings or mnt.gid_mappings) and not mnt.idmap:
        # mappings without the option: runc treats the mount as id-mapped anyway
        mnt.idmap = True
        mnt.ridmap = bool(mnt.flags & sc.MS_REC)
    return mnt


def _check_mappings(m: dict, key: str, where: str) -> None:
    maps = m.get(key)
    if maps is None:
        return
    if not isinstance(maps, list):
        raise ConfigError(f"{where}.{key}: must be an array")
    for j, e in enumerate(maps):
        if not isinstance(e, dict):
            raise ConfigError(f"{where}.{key}[{j}]: must be an object")
        for k in ("containerID", "hostID", "size"):
            v = e.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 0xFFFFFFFF:
                raise ConfigError(f"{where}.{key}[{j}].{k}: must be an unsigned 32-bit integer")
        if e["size"] == 0:
            raise ConfigError(f"{where}.{key}[{j}].size: must be greater than 0")


def parse_mounts(spec: config.Spec) -> list[Mount]:
    """The parsed config's mounts[], parsed for mounting (entry)."""
    return [entry(m, i) for i, m in enumerate(spec.mounts)]


def check(doc: dict, bundle: str) -> None:
    """Create-time validation of config.json's mounts[] (rootfs.check does the whole
    rootfs). Raises ConfigError naming the field."""
    mounts = doc.get("mounts") or []
    if not isinstance(mounts, list):
        raise ConfigError("mounts: must be an array")
    nss = (doc.get("linux") or {}).get("namespaces") or []
    userns = any(isinstance(n, dict) and n.get("type") == "user" for n in nss)
    for mnt in (parse_mount(m, i) for i, m in enumerate(mounts)):
        if mnt.idmap:
            if not mnt.bind:
                raise ConfigError(f"{mnt.where}.options: idmap/ridmap needs a bind mount")
            if bool(mnt.uid_mappings) != bool(mnt.gid_mappings):
                raise ConfigError(f"{mnt.where}: uidMappings and gidMappings must be given "
                                  f"together")
            if not mnt.uid_mappings and not userns:
                raise ConfigError(f"{mnt.where}.options: idmap without uidMappings/gidMappings "
                                  f"needs a user namespace")
        if mnt.bind:
            src = mnt.source
            if not src:
                raise ConfigError(f"{mnt.where}.source: a bind mount needs a source")
            path = src if os.path.isabs(src) else os.path.join(bundle, src)
            if not os.path.lexists(path):
                raise ConfigError(f"{mnt.where}.source: {src}: no such file or directory")
        if mnt.copyup and mnt.type != "tmpfs":
            raise ConfigError(f"{mnt.where}.options: tmpcopyup is only for tmpfs mounts")


# --- mount helpers ------------------------------------------------------------------------


def do_mount(source: str | None, target: str, fstype: str | None, flags: int,
             data: str | None, what: str) -> None:
    try:
        sc.mount(source, target, fstype, flags, data or None)
    except OSError as e:
        raise SysError(f"{what}: {why(e)}") from e


def statvfs_flags(path_or_fd: str | int) -> int:
    """MS_* flags of the mount holding path_or_fd, from statvfs."""
    st = os.fstatvfs(path_or_fd) if isinstance(path_or_fd, int) else os.statvfs(path_or_fd)
    return sum(ms for st_flag, ms in _ST_TO_MS.items() if st.f_flag & st_flag)


def remount(target: str, flags: int, what: str) -> None:
    """MS_REMOUNT target with flags; when that is refused (EPERM: flags locked by a more
    privileged mount namespace) retry keeping the mount's current lockable flags, as runc."""
    flags |= sc.MS_REMOUNT
    try:
        sc.mount(None, target, None, flags, None)
        return
    except OSError as e:
        if e.errno != errno.EPERM:
            raise SysError(f"{what}: remount: {why(e)}") from e
    cur = statvfs_flags(target)
    keep = cur & (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if not flags & _ATIME_FLAGS:
        keep |= cur & _ATIME_FLAGS
    try:
        sc.mount(None, target, None, flags | keep, None)
    except OSError as e:
        raise SysError(f"{what}: remount: {why(e)}") from e


def _apply_propagation_and_attrs(fd: int, mnt: Mount) -> None:
    for p in mnt.propagation:
        do_mount(None, fd_path(fd), None, p, None, f"{mnt.where}: propagation")
    if mnt.attr_set or mnt.attr_clr:
        try:
            sc.mount_setattr(fd, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE,
                             attr_set=mnt.attr_set, attr_clr=mnt.attr_clr)
        except OSError as e:
            raise SysError(f"{mnt.where}.options: mount_setattr: {why(e)}") from e


def _check_proc_destination(mnt: Mount, real: str) -> None:
    """runc's checkProcMount: nothing but procfs on /proc, and only a few lxcfs-style files
    inside it."""
    if real != "/proc" and not real.startswith("/proc/"):
        return
    if real == "/proc":
        if mnt.type == "proc":
            return
        if mnt.bind and mnt.source and _is_procfs(mnt.source):
            return
        raise ConfigError(f"{mnt.where}.destination: {real} cannot be mounted because it is "
                          f"not of type proc")
    if real in _PROC_MOUNT_ALLOWED:
        return
    raise ConfigError(f"{mnt.where}.destination: {real} cannot be mounted because it is "
                      f"inside /proc")


def _is_procfs(path: str) -> bool:
    mi = mountinfo.mount_of(os.path.realpath(path), mountinfo.parse_mountinfo())
    return bool(mi and mi["fstype"] == "proc")


def _source_path(src: str) -> str:
    return src if os.path.isabs(src) else os.path.join(os.getcwd(), src)


def resolve_sources(mnts: list[Mount], bundle: str | None) -> list[Mount]:
    """Relative bind sources are relative to the bundle (to the cwd when it is not given)."""
    if bundle:
        for m in mnts:
            if m.bind and m.source and not os.path.isabs(m.source):
                m.source = os.path.join(bundle, m.source)
    return mnts


# --- host side: id-mapped trees and bind sources ------------------------------------------


def prepare_idmapped_mounts(spec: config.Spec, container_userns_fd: int | None = None,
                            bundle: str | None = None) -> dict[int, int]:
    """Host side (outside the container's user namespace, where the kernel allows id-mapping
    the source filesystem): detached id-mapped trees for every idmap/ridmap mount, keyed by
    mount index, to pass to prepare_rootfs(mount_fds=...) in the init."""
    out: dict[int, int] = {}
    try:
        for mnt in resolve_sources(parse_mounts(spec), bundle):
            if not mnt.idmap:
                continue
            from pyoci.linux import idmap   # id-mapped mounts only (~0.1 ms to import)

            if mnt.uid_mappings:
                ns = idmap.userns_fd(mnt.uid_mappings, mnt.gid_mappings)
            elif container_userns_fd is not None:
                ns = os.dup(container_userns_fd)
            else:
                raise ConfigError(f"{mnt.where}.options: idmap needs mappings or a user "
                                  f"namespace")
            try:
                out[mnt.index] = idmap.open_idmapped_tree(mnt, _source_path(mnt.source or ""), ns)
            finally:
                os.close(ns)
    except BaseException:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def open_bind_sources(spec: config.Spec, pid: int, bundle: str | None = None) -> dict[int, int]:
    """Host side, for a container in a user namespace of its own (runc's mount sources): an
    O_PATH fd of the source of every bind mount that is not id-mapped, keyed by mount index,
    for prepare_rootfs(source_fds=...). They are opened by a helper that keeps the host's
    credentials but enters the mount namespace of the container's init (pid): a bind needs
    its source in the caller's mount namespace, and there its mounts are locked as the
    init's own are. Inside the container's user namespace the init could not reach a source
    under a directory only the host's root may search. A source that cannot be opened (or
    all of them, when the caller may not enter the namespace: rootless) is left out: the
    init then opens it itself, or reports why it cannot."""
    mnts = [m for m in resolve_sources(parse_mounts(spec), bundle)
            if m.bind and not m.idmap and m.source]
    if not mnts:
        return {}
    from pyoci import jsonio
    from pyoci.linux import sock as unix

    try:
        ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"mounts: the container's mount namespace: {why(e)}") from e
    ours, theirs = unix.socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - helper
            code = 1
            try:
                ours.close()
                sc.setns(ns, sc.CLONE_NEWNS)
                for i in range(0, len(mnts), 200):      # SCM_MAX_FD is 253 per message
                    idx, fds = [], []
                    for m in mnts[i:i + 200]:
                        try:
                            fds.append(os.open(m.source or "", os.O_PATH | os.O_CLOEXEC))
                            idx.append(m.index)
                        except OSError:
                            pass
                    unix.send_fds(theirs, [jsonio.dumps(idx).encode()], fds)
                    for fd in fds:
                        os.close(fd)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        out: dict[int, int] = {}
        try:
            for _ in range(0, len(mnts), 200):
                data, fds, _, _ = unix.recv_fds(ours, 65536, 253)
                if not data:
                    break
                out.update(zip(jsonio.loads(data), fds))
        finally:
            _, status = os.waitpid(child, 0)
        if status != 0:           # not entered (an unprivileged caller): the init opens them
            for fd in out.values():
                os.close(fd)
            return {}
        return out
    finally:
        os.close(ns)
        ours.close()
        theirs.close()


# --- one mounts[] entry -------------------------------------------------------------------


def mount_entry(root_fd: int, rootfs: str, mnt: Mount, spec: config.Spec, *, userns: bool,
                tree_fd: int | None = None, source_fd: int | None = None) -> None:
    """Mount one parsed entry under the rootfs (before pivot_root)."""
    try:
        if mnt.type == "cgroup":
            mount_cgroup(root_fd, rootfs, mnt, spec)
        elif mnt.bind:
            mount_bind(root_fd, rootfs, mnt, userns=userns, tree_fd=tree_fd,
                       source_fd=source_fd)
        else:
            mount_filesystem(root_fd, rootfs, mnt)
    except OSError as e:
        raise SysError(f"{mnt.where}.destination: {mnt.destination}: "
                       f"{why(e)}") from e


def mount_bind(root_fd: int, rootfs: str, mnt: Mount, *, userns: bool = False,
               tree_fd: int | None = None, source_fd: int | None = None) -> None:
    """source_fd: an O_PATH fd of the source opened on the host side (open_bind_sources)."""
    src = _source_path(mnt.source or "") if source_fd is None else fd_path(source_fd)
    try:
        st = os.stat(src)
    except OSError as e:
        raise SysError(f"{mnt.where}.source: {mnt.source}: {why(e)}") from e
    target = create_target(root_fd, mnt.destination, stat.S_ISDIR(st.st_mode))
    try:
        real = real_path_in_root(target, rootfs)
        _check_proc_destination(mnt, real)
        if mnt.idmap:
            from pyoci.linux import idmap   # loaded by prepare_rootfs, before any mount

            own = tree_fd is None
            if tree_fd is None:
                if mnt.uid_mappings:
                    ns = idmap.userns_fd(mnt.uid_mappings, mnt.gid_mappings)
                else:
                    ns = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    tree_fd = idmap.open_idmapped_tree(mnt, src, ns)
                finally:
                    os.close(ns)
            try:
                sc.move_mount(tree_fd, "", target, "",
                              sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
            except OSError as e:
                raise SysError(f"{mnt.where}: move_mount onto {mnt.destination}: "
                               f"{why(e)}") from e
            finally:
                if own:
                    os.close(tree_fd)
        else:
            do_mount(src, fd_path(target), None, sc.MS_BIND | (mnt.flags & sc.MS_REC), None,
                     f"{mnt.where}: bind {mnt.source} on {mnt.destination}")
    finally:
        os.close(target)
    fd = open_mounted(root_fd, rootfs, mnt.destination)
    try:
        flags = mnt.flags
        if mnt.destination == "/dev":
            flags &= ~sc.MS_RDONLY  # made read-only by finish_rootfs, after devices exist
        extra = flags & ~(sc.MS_REC | sc.MS_REMOUNT | sc.MS_BIND)
        if extra:
            remount(fd_path(fd), sc.MS_BIND | extra, f"{mnt.where}.options")
        _apply_propagation_and_attrs(fd, mnt)
    finally:
        os.close(fd)


def _check_ordinary_directory(root_fd: int, mnt: Mount) -> None:
    """proc and sysfs only on an ordinary directory (or a missing one), as runc: never
    through a symlink of the rootfs (an old attack: /proc -> somewhere else)."""
    path = clean_path(mnt.destination)
    if path == "/":
        return
    try:
        parent = open_in_root(root_fd, os.path.dirname(path))
    except FileNotFoundError:
        return
    try:
        st = os.stat(os.path.basename(path), dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        os.close(parent)
    if stat.S_ISDIR(st.st_mode):
        return
    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
    raise ConfigError(f"{mnt.where}.destination: {mnt.destination} is {what} in the rootfs: "
                      f"filesystem {mnt.type!r} must be mounted on an ordinary directory")


def _has_mode_option(data: str) -> bool:
    return any(o.startswith("mode=") for o in data.split(","))


def mount_filesystem(root_fd: int, rootfs: str, mnt: Mount) -> None:
    """tmpfs, proc, sysfs, devpts, mqueue, or any other filesystem type."""
    if mnt.type in ("proc", "sysfs"):
        _check_ordinary_directory(root_fd, mnt)
    old_mode = None
    try:
        fd = open_in_root(root_fd, mnt.destination)
        old_mode = stat.S_IMODE(os.fstat(fd).st_mode)
    except FileNotFoundError:
        fd = mkdir_all_in_root(root_fd, mnt.destination)
    copy_from = None
    try:
        real = real_path_in_root(fd, rootfs)
        _check_proc_destination(mnt, real)
        flags = mnt.flags
        if mnt.type == "tmpfs" or mnt.destination == "/dev":
            flags &= ~sc.MS_RDONLY  # finish_rootfs remounts read-only
        if mnt.copyup:
            copy_from = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        do_mount(mnt.source or mnt.type or "none", fd_path(fd), mnt.type, flags, mnt.data,
                 f"{mnt.where}: mount {mnt.type} on {mnt.destination}")
    finally:
        os.close(fd)
    fd = open_mounted(root_fd, rootfs, mnt.destination)
    try:
        if copy_from is not None:
            new = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                copy_tree(copy_from, new)
            finally:
                os.close(new)
        if mnt.type == "tmpfs" and old_mode is not None and not _has_mode_option(mnt.data):
            os.chmod(fd_path(fd), old_mode)
        _apply_propagation_and_attrs(fd, mnt)
    finally:
        os.close(fd)
        if copy_from is not None:
            os.close(copy_from)


def copy_tree(src_fd: int, dst_fd: int) -> None:
    """Copy a directory's contents between two directory fds (tmpcopyup): files, dirs,
    symlinks, fifos and device nodes, keeping mode, owner and times."""
    for entry in os.scandir(src_fd):
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst_fd)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=src_fd)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dst_fd)
            try:
                copy_tree(s, d)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
        elif stat.S_ISREG(mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                            | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
                try:
                    while True:
                        n = os.sendfile(d, s, None, 1 << 20)
                        if n == 0:
                            break
                finally:
                    os.close(d)
            finally:
                os.close(s)
        else:
            os.mknod(name, mode, st.st_rdev, dir_fd=dst_fd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_fd)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd,
                 follow_symlinks=False)


# --- cgroup mounts ------------------------------------------------------------------------


def mount_cgroup(root_fd: int, rootfs: str, mnt: Mount, spec: config.Spec) -> None:
    """A `cgroup` mount: cgroup2 on a unified host; on v1/hybrid hosts a tmpfs with every
    hierarchy under it. With a cgroup namespace fresh cgroup filesystems are mounted, without
    one the container's own cgroup directories are bind-mounted (runc)."""
    cgroupns = "cgroup" in spec.linux.namespace_paths()
    infos = mountinfo.parse_mountinfo()
    hier = cgpaths.cgroup_hierarchies(infos, rootfs)
    ro = mnt.flags & sc.MS_RDONLY
    if cgpaths.cgroup2_only(infos):
        fd = mkdir_all_in_root(root_fd, mnt.destination)
        try:
            if cgroupns:
                try:
                    sc.mount("cgroup2", fd_path(fd), "cgroup2", mnt.flags & ~sc.MS_BIND,
                             mnt.data or None)
                    fd2 = open_in_root(root_fd, mnt.destination)
                    try:
                        _apply_propagation_and_attrs(fd2, mnt)
                    finally:
                        os.close(fd2)
                    return
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EBUSY):
                        raise SysError(f"{mnt.where}: mount cgroup2: {why(e)}") from e
        finally:
            os.close(fd)
        v2 = [h for h in hier if h["fstype"] == "cgroup2"]
        src = cgpaths.hierarchy_dir(v2[0]) if v2 else "/sys/fs/cgroup"
        bind = Mount(index=mnt.index, destination=mnt.destination, type="bind", source=src,
                     flags=sc.MS_BIND | sc.MS_REC | (mnt.flags & ~sc.MS_REMOUNT),
                     propagation=mnt.propagation, attr_set=mnt.attr_set,
                     attr_clr=mnt.attr_clr)
        mount_bind(root_fd, rootfs, bind)
        return
    tmpfs = Mount(index=mnt.index, destination=mnt.destination, type="tmpfs", source="tmpfs",
                  flags=_DEFAULT_CGROUP_FLAGS, data="mode=755", propagation=mnt.propagation)
    mount_filesystem(root_fd, rootfs, tmpfs)
    merged = []
    for h in hier:
        name = os.path.basename(h["mountpoint"])
        dest = f"{mnt.destination}/{name}"
        if "," in name:
            merged.append(name)
        if cgroupns:
            flags = _DEFAULT_CGROUP_FLAGS | ro
            fd = mkdir_all_in_root(root_fd, dest)
            try:
                do_mount(h["fstype"], fd_path(fd), h["fstype"], flags, ",".join(h["options"]),
                         f"{mnt.where}: mount {h['fstype']} on {dest}")
            finally:
                os.close(fd)
        else:
            bind = Mount(index=mnt.index, destination=dest, type="bind",
                         source=cgpaths.hierarchy_dir(h),
                         flags=sc.MS_BIND | sc.MS_REC | (mnt.flags & ~sc.MS_REMOUNT),
                         propagation=mnt.propagation)
            mount_bind(root_fd, rootfs, bind)
    for name in merged:
        parent = open_in_root(root_fd, mnt.destination)
        try:
            for ctrl in name.split(","):
                try:
                    os.symlink(name, ctrl, dir_fd=parent)
                except FileExistsError:
                    pass
        finally:
            os.close(parent)
    if ro:
        fd = open_in_root(root_fd, mnt.destination)
        try:
            remount(fd_path(fd), sc.MS_BIND | _DEFAULT_CGROUP_FLAGS | sc.MS_RDONLY,
                    f"{mnt.where}: read-only cgroup root")
        finally:
            os.close(fd)
