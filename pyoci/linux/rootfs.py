"""The container's root filesystem as a whole: rootfs propagation, pivot_root, masked and
read-only paths, root.readonly.

Runs inside the container's init, which has already unshared its mount namespace (and maybe
a user namespace). The order follows runc's libcontainer/rootfs_linux.go:

    check(spec, bundle)                     create time, before anything is set up
    prepare_rootfs(spec, rootfs, userns=)   before pivot_root: / propagation, rootfs bind,
                                            mounts[] in order, devices and /dev links
    enter_rootfs(rootfs, no_pivot)          pivot_root(".", ".") or MS_MOVE + chroot
    finish_rootfs(spec)                     after pivot: ro tmpfs and /dev, readonlyPaths,
                                            maskedPaths, root.readonly, rootfsPropagation

mounts[] entries are pyoci.linux.mounts' work; paths inside the rootfs are resolved by
pyoci.linux.resolve. After pivot_root (finish_rootfs) no path is used at all: masked and
read-only paths are opened O_PATH with RESOLVE_NO_SYMLINKS and handled with open_tree,
fsmount, move_mount and mount_setattr on fds, so they work without a /proc in the
container."""

from __future__ import annotations

import errno
import os
import stat

from pyoci import TYPE_CHECKING
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux import devices, syscalls as sc
from pyoci.linux.mountinfo import mount_of, parse_mountinfo
from pyoci.linux.mounts import (PROPAGATION_OPTIONS, Mount, check as check_mounts, do_mount,
                                mount_entry, parse_mounts, resolve_sources)
from pyoci.linux.resolve import mkdir_all_in_root, open_in_root, open_nofollow

if TYPE_CHECKING:
    from pyoci.spec.config import Spec


def _propagation_flag(prop: str) -> int:
    """linux.rootfsPropagation's MS_* flags."""
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
    """Create-time validation of config.json's rootfsPropagation, masked/readonly paths,
    mounts[] and devices. Raises ConfigError naming the field."""
    linux = spec.get("linux") or {}
    if "rootfsPropagation" in linux:
        _propagation_flag(linux["rootfsPropagation"] or "")
    _check_path_list(spec, "maskedPaths")
    _check_path_list(spec, "readonlyPaths")
    check_mounts(spec, bundle)
    devices.check_devices(spec)


def make_parent_mount_private(rootfs: str) -> None:
    """runc's rootfsParentMountPrivate: pivot_root and MS_MOVE refuse a shared parent, and
    a shared parent would propagate our rootfs bind back to the host."""
    mi = mount_of(os.path.realpath(rootfs), parse_mountinfo())
    if mi and any(o.startswith("shared:") for o in mi["optional"]):
        do_mount(None, mi["mountpoint"], None, sc.MS_PRIVATE, None,
                 "rootfs parent mount: make private")


def needs_dev_setup(mounts: list[Mount]) -> bool:
    """False when /dev is bind-mounted from the host (runc's needsSetupDev)."""
    return not any(m.bind and m.destination == "/dev" for m in mounts)


def prepare_rootfs(spec: Spec, rootfs: str, *, userns: bool,
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
    mounts = resolve_sources(parse_mounts(spec), bundle)
    if any(m.idmap for m in mounts):
        # mount_entry's id-mapping, imported before the first mount (the host's files may
        # be covered once mounts are made)
        from pyoci.linux import idmap  # noqa: F401
    rootfs = os.path.realpath(rootfs)
    prop = spec.linux.rootfs_propagation
    flag = _propagation_flag(prop) if prop else sc.MS_SLAVE | sc.MS_REC
    if flag & sc.MS_UNBINDABLE:
        # an unbindable / could not be bound below; finish_rootfs applies it to the new /
        flag = sc.MS_SLAVE | sc.MS_REC
    if own_ns:
        do_mount(None, "/", None, flag, None, "linux.rootfsPropagation: /")
        make_parent_mount_private(rootfs)
    do_mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None, "root.path: bind rootfs")
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


def _make_cwd(root_fd: int, spec: Spec) -> None:
    """Create a missing process.cwd (mode 0755, as root), as runc does, inside the rootfs
    and on top of the mounts, before root.readonly and the user switch."""
    cwd = spec.process.cwd if spec.process is not None else ""
    if not cwd:
        return
    try:
        os.close(mkdir_all_in_root(root_fd, cwd))
    except OSError as e:
        raise SysError(f"process.cwd: {cwd}: {why(e)}") from e


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
            raise SysError(f"root.path: pivot_root: {why(e)}") from e
        os.fchdir(old)
        do_mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None, "old root: make rslave")
        try:
            sc.umount2(".", sc.MNT_DETACH)
        except OSError as e:
            raise SysError(f"old root: umount: {why(e)}") from e
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
            raise SysError(f"no_pivot: make {mp} rslave: {why(e)}") from e
        try:
            sc.umount2(mp, sc.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise SysError(f"no_pivot: umount {mp}: {why(e)}") from e
            do_mount("tmpfs", mp, "tmpfs", 0, None, f"no_pivot: cover {mp}")
    os.chdir(rootfs)
    do_mount(rootfs, "/", None, sc.MS_MOVE, None, "root.path: move rootfs onto /")
    os.chroot(".")
    os.chdir("/")


def fsmount_new(fstype: str, attrs: int = 0) -> int:
    """A new, detached filesystem of fstype (fsopen, fsconfig CREATE, fsmount) with
    MOUNT_ATTR_* attrs; returns the mount's fd."""
    fs = sc.fsopen(fstype)
    try:
        try:
            # name the source like mount(2) would ("tmpfs", not "none") for mountinfo readers
            sc.fsconfig(fs, sc.FSCONFIG_SET_STRING, "source", fstype)
        except OSError:
            pass
        sc.fsconfig(fs, sc.FSCONFIG_CMD_CREATE)
        return sc.fsmount(fs, sc.FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs)


def clone_tree(fd: int, recursive: bool = True) -> int:
    """open_tree(OPEN_TREE_CLONE) of the file or directory fd refers to: a detached bind."""
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_EMPTY_PATH
    return sc.open_tree(fd, "", flags | (sc.AT_RECURSIVE if recursive else 0))


def move_onto(tree: int, target: int) -> None:
    """move_mount a detached tree onto the O_PATH fd target (no path lookup at all)."""
    sc.move_mount(tree, "", target, "", sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)


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
        fd = open_nofollow(path)
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
        raise SysError(f"{what}: {path}: {why(e)}") from e


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
    fd = open_nofollow("/dev/null")
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
        raise SysError(f"root.readonly: {why(e)}") from e
    finally:
        os.close(fd)


def finish_rootfs(spec: Spec, own_ns: bool = True) -> None:
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
                    raise SysError(f"{mnt.where}: read-only: {why(e)}") from e
    finally:
        os.close(root)
    linux = spec.linux
    for i, p in enumerate(linux.readonly_paths):
        readonly_path(p, f"linux.readonlyPaths[{i}]")
    for i, p in enumerate(linux.masked_paths):
        mask_path(p, f"linux.maskedPaths[{i}]")
    if spec.root.readonly:
        set_root_readonly()
    if linux.rootfs_propagation:
        flag = _propagation_flag(linux.rootfs_propagation)
        if not flag & sc.MS_PRIVATE or not own_ns:  # private: done on the parent before pivot
            do_mount(None, "/", None, flag, None, "linux.rootfsPropagation")
