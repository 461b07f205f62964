"""The container's root filesystem: mounts[], rootfs propagation, pivot_root, masked and
read-only paths, root.readonly.

Runs inside the container's init, which has already unshared its mount namespace (and maybe
a user namespace). The order follows runc's libcontainer/rootfs_linux.go:

    check(spec, bundle)                     create time, before anything is set up
    prepare_rootfs(spec, rootfs, userns=)   before pivot_root: / propagation, rootfs bind,
                                            mounts[] in order, devices and /dev links
    enter_rootfs(rootfs, no_pivot)          pivot_root(".", ".") or MS_MOVE + chroot
    finish_rootfs(spec)                     after pivot: ro tmpfs and /dev, readonlyPaths,
                                            maskedPaths, root.readonly, rootfsPropagation

Mount targets are never looked up by path string: every destination is resolved with
openat2(RESOLVE_IN_ROOT) from a dirfd of the rootfs, missing components are created with
mkdirat relative to the resolved parent, and the mount goes onto /proc/self/fd/N of an O_PATH
fd of the target (runc's CVE-2021-30465 fix), so a symlink inside the rootfs can never send a
mount out of it. After pivot_root (finish_rootfs) no path is used at all: masked and read-only
paths are opened O_PATH with RESOLVE_NO_SYMLINKS and handled with open_tree, fsmount,
move_mount and mount_setattr on fds, so they work without a /proc in the container.
Relative bind sources are relative to `bundle` when given, else to the current directory.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pyoci.record import dataclass, field

from pyoci.errors import ConfigError, SysError
from pyoci.linux import syscalls as sc

MOVE_MOUNT_T_EMPTY_PATH = 0x40

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

EXTENSION_OPTIONS = ("tmpcopyup", "idmap", "ridmap")

# statvfs f_flag bits -> MS_* (they differ for relatime and nosymfollow)
_ST_TO_MS = {
    os.ST_RDONLY: sc.MS_RDONLY, os.ST_NOSUID: sc.MS_NOSUID, os.ST_NODEV: sc.MS_NODEV,
    os.ST_NOEXEC: sc.MS_NOEXEC, os.ST_NOATIME: sc.MS_NOATIME,
    os.ST_NODIRATIME: sc.MS_NODIRATIME, os.ST_RELATIME: sc.MS_RELATIME,
    0x2000: sc.MS_NOSYMFOLLOW,
}
_ATIME_FLAGS = sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME
_LOCKABLE_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | _ATIME_FLAGS
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
    uid_mappings: list[dict] = field(default_factory=list)
    gid_mappings: list[dict] = field(default_factory=list)

    @property
    def bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def where(self) -> str:
        return f"mounts[{self.index}]"


# --- parsing and validation ---------------------------------------------------------------

def clean_path(path: str) -> str:
    """Absolute, lexically cleaned container path ("a/../b" -> "/b"; ".." stops at /)."""
    p = os.path.normpath("/" + path)
    return "/" + p.lstrip("/")


def parse_mount(m: dict, index: int) -> Mount:
    """Parse mounts[index] the way runc does; ConfigError names the offending field."""
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
    mnt = Mount(index=index, destination=clean_path(dest), type=m.get("type") or None,
                source=m.get("source"))
    if mnt.type == "bind":
        mnt.flags |= sc.MS_BIND
    data: list[str] = []
    unknown: list[str] = []
    for o in opts:
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
    mnt.uid_mappings = _parse_mappings(m, "uidMappings", where)
    mnt.gid_mappings = _parse_mappings(m, "gidMappings", where)
    if (mnt.uid_mappings or mnt.gid_mappings) and not mnt.idmap:
        # mappings without the option: runc treats the mount as id-mapped anyway
        mnt.idmap = True
        mnt.ridmap = bool(mnt.flags & sc.MS_REC)
    return mnt


def _parse_mappings(m: dict, key: str, where: str) -> list[dict]:
    maps = m.get(key)
    if maps is None:
        return []
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
    return maps


def parse_mounts(spec: dict) -> list[Mount]:
    mounts = spec.get("mounts") or []
    if not isinstance(mounts, list):
        raise ConfigError("mounts: must be an array")
    return [parse_mount(m, i) for i, m in enumerate(mounts)]


def _namespaces(spec: dict) -> set[str]:
    nss = (spec.get("linux") or {}).get("namespaces") or []
    return {n.get("type") for n in nss if isinstance(n, dict)}


def _propagation_flag(spec: dict) -> int:
    prop = (spec.get("linux") or {}).get("rootfsPropagation") or ""
    if prop not in PROPAGATION_OPTIONS:
        raise ConfigError(f"linux.rootfsPropagation: unknown propagation {prop!r}")
    return PROPAGATION_OPTIONS[prop]


def _check_path_list(spec: dict, key: str) -> list[str]:
    paths = (spec.get("linux") or {}).get(key) or []
    if not isinstance(paths, list):
        raise ConfigError(f"linux.{key}: must be an array of paths")
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p.startswith("/"):
            raise ConfigError(f"linux.{key}[{i}]: {p!r} is not an absolute path")
    return paths


def check(spec: dict, bundle: str) -> None:
    """Create-time validation of mounts, rootfsPropagation, masked/readonly paths and
    devices. Raises ConfigError naming the field."""
    from pyoci.linux import devices

    linux = spec.get("linux") or {}
    if "rootfsPropagation" in linux:
        _propagation_flag(spec)
    _check_path_list(spec, "maskedPaths")
    _check_path_list(spec, "readonlyPaths")
    userns = "user" in _namespaces(spec)
    for mnt in parse_mounts(spec):
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
    devices.check_devices(spec)


# --- mountinfo ----------------------------------------------------------------------------

def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1:i + 4]) == 3 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(path: str = "/proc/self/mountinfo") -> list[dict]:
    """/proc/self/mountinfo as dicts: id, parent, dev, root, mountpoint, options (list),
    optional (list, e.g. ["shared:3"]), fstype, source, super_options (list)."""
    out = []
    with open(path) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a = left.split(" ")
            b = right.split(" ")
            out.append({
                "id": int(a[0]), "parent": int(a[1]), "dev": a[2], "root": _unescape(a[3]),
                "mountpoint": _unescape(a[4]), "options": a[5].split(","),
                "optional": [x for x in a[6:] if x], "fstype": b[0],
                "source": _unescape(b[1]) if len(b) > 1 else "",
                "super_options": b[2].split(",") if len(b) > 2 else [],
            })
    return out


def _mount_of(path: str, infos: list[dict]) -> dict | None:
    """The (topmost) mountinfo entry whose mountpoint is the longest prefix of path."""
    best = None
    for mi in infos:
        mp = mi["mountpoint"]
        if path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best["mountpoint"]):
                best = mi
    return best


# --- safe path handling inside the rootfs -------------------------------------------------

def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """openat2(root_fd, path, RESOLVE_IN_ROOT): symlinks (absolute or ..) stay inside root."""
    rel = clean_path(path).lstrip("/") or "."
    return sc.openat2(root_fd, rel, flags | os.O_CLOEXEC,
                      resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)


def _path_in_root(fd: int, root_fd: int) -> str:
    """Container path of fd, given the rootfs dirfd it was resolved from."""
    p, root = os.readlink(fd_path(fd)), os.readlink(fd_path(root_fd)).rstrip("/")
    return clean_path(p[len(root):]) if p == root or p.startswith(root + "/") else "/"


def mkdir_all_in_root(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create every missing directory of path inside root_fd (never leaving it); returns an
    O_PATH fd of the directory. A dangling symlink on the way is followed inside the root
    (its target is created there), as runc's in-scope resolution does."""
    path = clean_path(path)
    for _ in range(40):
        parts = [p for p in path.split("/") if p]
        fd = os.dup(root_fd)
        restart = None
        try:
            for i, name in enumerate(parts):
                sub = "/".join(parts[:i + 1])
                try:
                    nfd = open_in_root(root_fd, sub, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        os.mkdir(name, mode, dir_fd=fd)
                    except FileExistsError:
                        try:
                            link = os.readlink(name, dir_fd=fd)
                        except OSError:
                            link = None  # lost a race with a mkdir: reopen below
                        if link is not None:
                            base = "/" if link.startswith("/") else _path_in_root(fd, root_fd)
                            rest = "/".join(parts[i + 1:])
                            restart = clean_path(os.path.join(base, link, rest))
                            break
                    nfd = open_in_root(root_fd, sub, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        if restart is None:
            return fd
        os.close(fd)
        path = restart
    raise OSError(errno.ELOOP, f"{path}: too many symbolic links")


def open_mounted(root_fd: int, rootfs: str, dest: str) -> int:
    """O_PATH fd of what was just mounted on dest: on "/" the rootfs itself is covered, and
    root_fd (resolved from below the new mount) would still name the covered directory."""
    if clean_path(dest) == "/":
        return os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return open_in_root(root_fd, dest)


def create_target(root_fd: int, dest: str, is_dir: bool) -> int:
    """Make dest exist inside the rootfs (a directory, or an empty file when binding a
    non-directory) and return an O_PATH fd of it (symlinks resolved inside the root). A
    dangling symlink is followed inside the root and its target created, as runc does
    (its SecureJoin'd path): /etc/resolv.conf -> ../run/x makes <rootfs>/run/x."""
    path = clean_path(dest)
    for _ in range(40):
        try:
            return open_in_root(root_fd, path)
        except FileNotFoundError:
            pass
        if is_dir:
            return mkdir_all_in_root(root_fd, path)
        parent = mkdir_all_in_root(root_fd, os.path.dirname(path))
        try:
            name = os.path.basename(path)
            try:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=parent))
                return open_in_root(root_fd, path)
            except FileExistsError:
                pass
            try:
                link = os.readlink(name, dir_fd=parent)
            except OSError:
                return open_in_root(root_fd, path)     # lost a race with a create
            base = "/" if link.startswith("/") else _path_in_root(parent, root_fd)
            path = clean_path(os.path.join(base, link))
        finally:
            os.close(parent)
    raise OSError(errno.ELOOP, f"{dest}: too many symbolic links")


def _real_path_in_root(fd: int, rootfs: str) -> str:
    """Path of fd relative to rootfs, as a container path ("/proc/sys")."""
    p = os.readlink(fd_path(fd))
    root = rootfs.rstrip("/")
    if p == root:
        return "/"
    if p.startswith(root + "/"):
        return p[len(root):]
    raise SysError(f"mount target {p} escaped the rootfs {rootfs}")


# --- mount helpers ------------------------------------------------------------------------

def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None, what: str) -> None:
    try:
        sc.mount(source, target, fstype, flags, data or None)
    except OSError as e:
        raise SysError(f"{what}: {_why(e)}") from e


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
            raise SysError(f"{what}: remount: {_why(e)}") from e
    cur = statvfs_flags(target)
    keep = cur & (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if not flags & _ATIME_FLAGS:
        keep |= cur & _ATIME_FLAGS
    try:
        sc.mount(None, target, None, flags | keep, None)
    except OSError as e:
        raise SysError(f"{what}: remount: {_why(e)}") from e


def _apply_propagation_and_attrs(fd: int, mnt: Mount) -> None:
    for p in mnt.propagation:
        _mount(None, fd_path(fd), None, p, None, f"{mnt.where}: propagation")
    if mnt.attr_set or mnt.attr_clr:
        try:
            sc.mount_setattr(fd, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE,
                             attr_set=mnt.attr_set, attr_clr=mnt.attr_clr)
        except OSError as e:
            raise SysError(f"{mnt.where}.options: mount_setattr: {_why(e)}") from e


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
    mi = _mount_of(os.path.realpath(path), parse_mountinfo())
    return bool(mi and mi["fstype"] == "proc")


def _source_path(src: str) -> str:
    return src if os.path.isabs(src) else os.path.join(os.getcwd(), src)


# --- user namespaces for id-mapped mounts -------------------------------------------------

def _mapping_text(maps: list[dict]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)


def userns_fd(uid_mappings: list[dict], gid_mappings: list[dict]) -> int:
    """An fd of a new, empty user namespace with these mappings (for MOUNT_ATTR_IDMAP): a
    short-lived child unshares CLONE_NEWUSER, we write its maps, open its ns and let it go."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise SysError("idmap: helper could not create a user namespace")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(_mapping_text(uid_mappings))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(_mapping_text(gid_mappings))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"idmap: user namespace for mappings: {_why(e)}") from e
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def open_idmapped_tree(mnt: Mount, source: str, ns_fd: int) -> int:
    """A detached clone of source (recursive for rbind) with MOUNT_ATTR_IDMAP set from the
    user namespace ns_fd (on every submount for ridmap). Returns the tree's fd."""
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC
    if mnt.flags & sc.MS_REC:
        flags |= sc.AT_RECURSIVE
    try:
        tree = sc.open_tree(sc.AT_FDCWD, source, flags)
    except OSError as e:
        raise SysError(f"{mnt.where}.source: open_tree {source}: {_why(e)}") from e
    try:
        sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if mnt.ridmap else 0),
                         attr_set=sc.MOUNT_ATTR_IDMAP, userns_fd=ns_fd)
    except OSError as e:
        os.close(tree)
        raise SysError(f"{mnt.where}.options: cannot id-map {source}: {_why(e)}") from e
    return tree


def prepare_idmapped_mounts(spec: dict, container_userns_fd: int | None = None,
                            bundle: str | None = None) -> dict[int, int]:
    """Host side (outside the container's user namespace, where the kernel allows id-mapping
    the source filesystem): detached id-mapped trees for every idmap/ridmap mount, keyed by
    mount index, to pass to prepare_rootfs(mount_fds=...) in the init."""
    out: dict[int, int] = {}
    try:
        for mnt in _resolve_sources(parse_mounts(spec), bundle):
            if not mnt.idmap:
                continue
            if mnt.uid_mappings:
                ns = userns_fd(mnt.uid_mappings, mnt.gid_mappings)
            elif container_userns_fd is not None:
                ns = os.dup(container_userns_fd)
            else:
                raise ConfigError(f"{mnt.where}.options: idmap needs mappings or a user "
                                  f"namespace")
            try:
                out[mnt.index] = open_idmapped_tree(mnt, _source_path(mnt.source or ""), ns)
            finally:
                os.close(ns)
    except BaseException:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def open_bind_sources(spec: dict, pid: int, bundle: str | None = None) -> dict[int, int]:
    """Host side, for a container in a user namespace of its own (runc's mount sources): an
    O_PATH fd of the source of every bind mount that is not id-mapped, keyed by mount index,
    for prepare_rootfs(source_fds=...). They are opened by a helper that keeps the host's
    credentials but enters the mount namespace of the container's init (pid): a bind needs
    its source in the caller's mount namespace, and there its mounts are locked as the
    init's own are. Inside the container's user namespace the init could not reach a source
    under a directory only the host's root may search. A source that cannot be opened (or
    all of them, when the caller may not enter the namespace: rootless) is left out: the
    init then opens it itself, or reports why it cannot."""
    mnts = [m for m in _resolve_sources(parse_mounts(spec), bundle)
            if m.bind and not m.idmap and m.source]
    if not mnts:
        return {}
    from pyoci import jsonio
    from pyoci.linux import sock as unix

    try:
        ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"mounts: the container's mount namespace: {_why(e)}") from e
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

def mount_entry(root_fd: int, rootfs: str, mnt: Mount, spec: dict, *, userns: bool,
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
                       f"{_why(e)}") from e


def mount_bind(root_fd: int, rootfs: str, mnt: Mount, *, userns: bool = False,
               tree_fd: int | None = None, source_fd: int | None = None) -> None:
    """source_fd: an O_PATH fd of the source opened on the host side (open_bind_sources)."""
    src = _source_path(mnt.source or "") if source_fd is None else fd_path(source_fd)
    try:
        st = os.stat(src)
    except OSError as e:
        raise SysError(f"{mnt.where}.source: {mnt.source}: {_why(e)}") from e
    target = create_target(root_fd, mnt.destination, stat.S_ISDIR(st.st_mode))
    try:
        real = _real_path_in_root(target, rootfs)
        _check_proc_destination(mnt, real)
        if mnt.idmap:
            own = tree_fd is None
            if own:
                if mnt.uid_mappings:
                    ns = userns_fd(mnt.uid_mappings, mnt.gid_mappings)
                else:
                    ns = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    tree_fd = open_idmapped_tree(mnt, src, ns)
                finally:
                    os.close(ns)
            try:
                sc.move_mount(tree_fd, "", target, "",
                              sc.MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
            except OSError as e:
                raise SysError(f"{mnt.where}: move_mount onto {mnt.destination}: "
                               f"{_why(e)}") from e
            finally:
                if own:
                    os.close(tree_fd)
        else:
            _mount(src, fd_path(target), None, sc.MS_BIND | (mnt.flags & sc.MS_REC), None,
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
        real = _real_path_in_root(fd, rootfs)
        _check_proc_destination(mnt, real)
        flags = mnt.flags
        if mnt.type == "tmpfs" or mnt.destination == "/dev":
            flags &= ~sc.MS_RDONLY  # finish_rootfs remounts read-only
        if mnt.copyup:
            copy_from = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _mount(mnt.source or mnt.type or "none", fd_path(fd), mnt.type, flags, mnt.data,
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

def own_cgroups(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """/proc/self/cgroup as {controller-list: path}; "" is the unified (v2) hierarchy."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
    return out


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
    own = own_cgroups()
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
    infos = parse_mountinfo() if infos is None else infos
    return any(mi["mountpoint"] == "/sys/fs/cgroup" and mi["fstype"] == "cgroup2"
               for mi in infos)


def _own_dir(h: dict) -> str:
    rel = os.path.relpath(h["own"], h["root"]) if h["own"].startswith(h["root"]) else "."
    return os.path.normpath(os.path.join(h["mountpoint"], rel))


def mount_cgroup(root_fd: int, rootfs: str, mnt: Mount, spec: dict) -> None:
    """A `cgroup` mount: cgroup2 on a unified host; on v1/hybrid hosts a tmpfs with every
    hierarchy under it. With a cgroup namespace fresh cgroup filesystems are mounted, without
    one the container's own cgroup directories are bind-mounted (runc)."""
    cgroupns = "cgroup" in _namespaces(spec)
    infos = parse_mountinfo()
    hier = cgroup_hierarchies(infos, rootfs)
    ro = mnt.flags & sc.MS_RDONLY
    if cgroup2_only(infos):
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
                        raise SysError(f"{mnt.where}: mount cgroup2: {_why(e)}") from e
        finally:
            os.close(fd)
        v2 = [h for h in hier if h["fstype"] == "cgroup2"]
        src = _own_dir(v2[0]) if v2 else "/sys/fs/cgroup"
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
                _mount(h["fstype"], fd_path(fd), h["fstype"], flags, ",".join(h["options"]),
                       f"{mnt.where}: mount {h['fstype']} on {dest}")
            finally:
                os.close(fd)
        else:
            bind = Mount(index=mnt.index, destination=dest, type="bind", source=_own_dir(h),
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


# --- the whole rootfs ---------------------------------------------------------------------

def make_parent_mount_private(rootfs: str) -> None:
    """runc's rootfsParentMountPrivate: pivot_root and MS_MOVE refuse a shared parent, and
    a shared parent would propagate our rootfs bind back to the host."""
    mi = _mount_of(os.path.realpath(rootfs), parse_mountinfo())
    if mi and any(o.startswith("shared:") for o in mi["optional"]):
        _mount(None, mi["mountpoint"], None, sc.MS_PRIVATE, None,
               "rootfs parent mount: make private")


# --- a container without a mount namespace ------------------------------------------------
# Its mounts are made in the runtime's mount namespace, under the rootfs (bound onto itself
# first, so that root.readonly & co. change that bind, never the host's mount holding the
# bundle); "/" and the rootfs' parent mount keep their propagation (runc makes the host's
# / rslave and the parent private). The runtime records the mounts that appeared under the
# rootfs during create (mount id and mountpoint) and unmounts exactly those at delete, or
# at once when create fails.

def mounts_under(rootfs: str) -> dict[int, str]:
    """Mount id -> mountpoint of every mount at or below rootfs (a real path)."""
    top = rootfs.rstrip("/") + "/"
    return {mi["id"]: mi["mountpoint"] for mi in parse_mountinfo()
            if mi["mountpoint"] == rootfs or mi["mountpoint"].startswith(top)}


def new_mounts(rootfs: str, before: dict[int, str]) -> list[list]:
    """[id, mountpoint] of the mounts below rootfs that are not in before, in mountinfo's
    order (the order they were mounted in: parents before what is mounted on them)."""
    return [[i, mp] for i, mp in mounts_under(rootfs).items() if i not in before]


def _fd_mount_id(fd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def unmount_recorded(recorded: list) -> list[str]:
    """Detach the mounts create recorded ([id, mountpoint], oldest first), newest first:
    each one only if the mount its path leads to now is still that very mount (its id, read
    from the fd that is then unmounted: a path the container changed meanwhile, through a
    symlink or a rename, reaches some other mount and is left alone). Mounts the container
    made under them go with them (MNT_DETACH). Returns the mountpoints left in place."""
    left = []
    for entry in reversed(recorded or []):
        try:
            mid, path = int(entry[0]), str(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        if mid not in {mi["id"] for mi in parse_mountinfo()}:
            continue                    # gone already (detached with its parent)
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            left.append(path)
            continue
        try:
            if _fd_mount_id(fd) != mid:
                left.append(path)       # covered, moved or replaced: not touched
                continue
            try:
                sc.umount2(f"/proc/self/fd/{fd}", sc.MNT_DETACH)
            except OSError:
                left.append(path)
        finally:
            os.close(fd)
    return left


def needs_dev_setup(mounts: list[Mount]) -> bool:
    """False when /dev is bind-mounted from the host (runc's needsSetupDev)."""
    return not any(m.bind and m.destination == "/dev" for m in mounts)


def _resolve_sources(mnts: list[Mount], bundle: str | None) -> list[Mount]:
    """Relative bind sources are relative to the bundle (to the cwd when it is not given)."""
    if bundle:
        for m in mnts:
            if m.bind and m.source and not os.path.isabs(m.source):
                m.source = os.path.join(bundle, m.source)
    return mnts


def prepare_rootfs(spec: dict, rootfs: str, *, userns: bool,
                   mount_fds: dict[int, int] | None = None,
                   bundle: str | None = None,
                   source_fds: dict[int, int] | None = None,
                   own_ns: bool = True) -> None:
    """Before pivot_root, in the container's mount namespace: make / slave (or
    rootfsPropagation), bind the rootfs on itself, do mounts[] in order, then devices and
    /dev links unless /dev is a host bind. mount_fds: detached id-mapped trees made by
    prepare_idmapped_mounts() on the host side, keyed by mount index (needed when the init is
    in a user namespace); source_fds: bind sources opened there (open_bind_sources).
    own_ns False: no mount namespace of its own, the runtime's is used: the propagation of
    / and of the rootfs' parent mount is left alone (see mounts_under)."""
    from pyoci.linux import devices

    mounts = _resolve_sources(parse_mounts(spec), bundle)
    rootfs = os.path.realpath(rootfs)
    prop = (spec.get("linux") or {}).get("rootfsPropagation")
    flag = _propagation_flag(spec) if prop else sc.MS_SLAVE | sc.MS_REC
    if flag & sc.MS_UNBINDABLE:
        # an unbindable / could not be bound below; finish_rootfs applies it to the new /
        flag = sc.MS_SLAVE | sc.MS_REC
    if own_ns:
        _mount(None, "/", None, flag, None, "linux.rootfsPropagation: /")
        make_parent_mount_private(rootfs)
    _mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None, "root.path: bind rootfs")
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for mnt in mounts:
            tree = (mount_fds or {}).get(mnt.index)
            mount_entry(root_fd, rootfs, mnt, spec, userns=userns, tree_fd=tree,
                        source_fd=(source_fds or {}).get(mnt.index))
            if mnt.destination == "/":
                # a mount on the rootfs itself: what follows goes on top of it, as
                # pivot_root will see it (root_fd still names the covered directory)
                os.close(root_fd)
                root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if needs_dev_setup(mounts):
            devices.setup_dev(spec, root_fd, userns=userns)
        _make_cwd(root_fd, spec)
    finally:
        os.close(root_fd)


def _make_cwd(root_fd: int, spec: dict) -> None:
    """Create a missing process.cwd (mode 0755, as root), as runc does, inside the rootfs
    and on top of the mounts, before root.readonly and the user switch."""
    cwd = (spec.get("process") or {}).get("cwd")
    if not cwd:
        return
    try:
        os.close(mkdir_all_in_root(root_fd, cwd))
    except OSError as e:
        raise SysError(f"process.cwd: {cwd}: {_why(e)}") from e


def enter_rootfs(rootfs: str, no_pivot: bool = False) -> None:
    """Make rootfs the root: pivot_root(".", ".") and detach the old root (runc), or with
    no_pivot hide the host's proc/sys mounts, MS_MOVE the rootfs onto / and chroot."""
    rootfs = os.path.realpath(rootfs)
    if no_pivot:
        _move_root(rootfs)
        return
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        try:
            sc.pivot_root(".", ".")
        except OSError as e:
            raise SysError(f"root.path: pivot_root: {_why(e)}") from e
        os.fchdir(old)
        _mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None, "old root: make rslave")
        try:
            sc.umount2(".", sc.MNT_DETACH)
        except OSError as e:
            raise SysError(f"old root: umount: {_why(e)}") from e
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def _move_root(rootfs: str) -> None:
    for mi in parse_mountinfo():
        mp = mi["mountpoint"]
        if mi["root"] != "/" or mi["fstype"] not in ("proc", "sysfs"):
            continue
        if mp == rootfs or mp.startswith(rootfs + "/"):
            continue
        try:
            sc.mount(None, mp, None, sc.MS_SLAVE | sc.MS_REC, None)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue
            raise SysError(f"no_pivot: make {mp} rslave: {_why(e)}") from e
        try:
            sc.umount2(mp, sc.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise SysError(f"no_pivot: umount {mp}: {_why(e)}") from e
            _mount("tmpfs", mp, "tmpfs", 0, None, f"no_pivot: cover {mp}")
    os.chdir(rootfs)
    _mount(rootfs, "/", None, sc.MS_MOVE, None, "root.path: move rootfs onto /")
    os.chroot(".")
    os.chdir("/")


def _open_nofollow(path: str) -> int | None:
    """O_PATH fd of an absolute path, refusing every symlink on the way; None if missing."""
    try:
        fd = sc.openat2(sc.AT_FDCWD, clean_path(path), os.O_PATH | os.O_NOFOLLOW,
                        resolve=sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ELOOP, f"{path} is a symbolic link")
    return fd


_libc = sc.libc                 # its syscall's restype is c_long (syscalls)
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1


def fsmount_new(fstype: str, attrs: int = 0) -> int:
    """A new, detached filesystem of fstype (fsopen, fsconfig CREATE, fsmount) with
    MOUNT_ATTR_* attrs; returns the mount's fd."""
    fs = _libc.syscall(sc.SYS_fsopen, fstype.encode(), ctypes.c_uint(FSOPEN_CLOEXEC))
    if fs < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fsopen {fstype}: {os.strerror(e)}")
    try:
        # name the source like mount(2) would ("tmpfs", not "none") for mountinfo readers
        _libc.syscall(sc.SYS_fsconfig, fs, ctypes.c_uint(FSCONFIG_SET_STRING), b"source",
                      fstype.encode(), 0)
        if _libc.syscall(sc.SYS_fsconfig, fs, ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None,
                         0) < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"fsconfig {fstype}: {os.strerror(e)}")
        m = _libc.syscall(sc.SYS_fsmount, fs, ctypes.c_uint(FSMOUNT_CLOEXEC),
                          ctypes.c_uint(attrs))
        if m < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"fsmount {fstype}: {os.strerror(e)}")
        return m
    finally:
        os.close(fs)


def clone_tree(fd: int, recursive: bool = True) -> int:
    """open_tree(OPEN_TREE_CLONE) of the file or directory fd refers to: a detached bind."""
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_EMPTY_PATH
    return sc.open_tree(fd, "", flags | (sc.AT_RECURSIVE if recursive else 0))


def move_onto(tree: int, target: int) -> None:
    """move_mount a detached tree onto the O_PATH fd target (no path lookup at all)."""
    sc.move_mount(tree, "", target, "", sc.MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def set_readonly(fd: int, recursive: bool = False) -> None:
    """Make the mount at fd read-only (per-mount flag; nosuid/nodev/noexec and locked flags
    are left as they are)."""
    sc.mount_setattr(fd, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if recursive else 0),
                     attr_set=sc.MOUNT_ATTR_RDONLY)


# The steps below run after pivot_root, where the only procfs may be the container's own
# (or none at all): they work purely on fds opened with O_PATH|O_NOFOLLOW and
# RESOLVE_NO_SYMLINKS, using open_tree/fsmount/move_mount/mount_setattr, never a path.

def _cover(path: str, what: str, make_tree) -> None:
    """Mount make_tree(fd of path) over path, where path is opened without following any
    symlink (a missing path is skipped): the race-free way to mask or protect it."""
    try:
        fd = _open_nofollow(path)
        if fd is None:
            return
        try:
            tree = make_tree(fd)
            try:
                move_onto(tree, fd)
            finally:
                os.close(tree)
        finally:
            os.close(fd)
    except OSError as e:
        raise SysError(f"{what}: {path}: {_why(e)}") from e


def _readonly_tree(fd: int) -> int:
    tree = clone_tree(fd)
    try:
        set_readonly(tree, recursive=True)
    except BaseException:
        os.close(tree)
        raise
    return tree


def readonly_path(path: str, what: str = "linux.readonlyPaths") -> None:
    """Bind path on itself read-only (submounts too), keeping nosuid/nodev/noexec."""
    _cover(path, what, _readonly_tree)


def _dev_null() -> int:
    fd = _open_nofollow("/dev/null")
    if fd is None:
        raise SysError("linux.maskedPaths: /dev/null is missing in the container")
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise SysError("linux.maskedPaths: /dev/null is not the null device")
    return fd


def _mask_tree(fd: int) -> int:
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        return fsmount_new("tmpfs", sc.MOUNT_ATTR_RDONLY)
    null = _dev_null()
    try:
        return clone_tree(null, recursive=False)
    finally:
        os.close(null)


def mask_path(path: str, what: str = "linux.maskedPaths") -> None:
    """Hide path: a read-only empty tmpfs over a directory, /dev/null over anything else."""
    _cover(path, what, _mask_tree)


def set_root_readonly() -> None:
    """root.readonly: make / (the rootfs bind) read-only."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        set_readonly(fd)
    except OSError as e:
        raise SysError(f"root.readonly: {_why(e)}") from e
    finally:
        os.close(fd)


def finish_rootfs(spec: dict, own_ns: bool = True) -> None:
    """After enter_rootfs (or the chroot without a mount namespace, where / is the rootfs
    bind): read-only tmpfs and /dev mounts, readonlyPaths, maskedPaths, root.readonly and
    the final rootfsPropagation of /."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for mnt in parse_mounts(spec):
            if mnt.flags & sc.MS_RDONLY and (mnt.type == "tmpfs" or mnt.destination == "/dev"):
                try:
                    fd = open_in_root(root, mnt.destination)
                    try:
                        set_readonly(fd)
                    finally:
                        os.close(fd)
                except OSError as e:
                    raise SysError(f"{mnt.where}: read-only: {_why(e)}") from e
    finally:
        os.close(root)
    linux = spec.get("linux") or {}
    for i, p in enumerate(_check_path_list(spec, "readonlyPaths")):
        readonly_path(p, f"linux.readonlyPaths[{i}]")
    for i, p in enumerate(_check_path_list(spec, "maskedPaths")):
        mask_path(p, f"linux.maskedPaths[{i}]")
    if (spec.get("root") or {}).get("readonly"):
        set_root_readonly()
    if linux.get("rootfsPropagation"):
        flag = _propagation_flag(spec)
        if not flag & sc.MS_PRIVATE or not own_ns:  # private: done on the parent before pivot
            _mount(None, "/", None, flag, None, "linux.rootfsPropagation")
