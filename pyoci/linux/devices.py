"""Device nodes and /dev links in the container's rootfs (before pivot_root).

runc's createDevices/setupPtmx/setupDevSymlinks: the default devices (null, zero, full,
random, urandom, tty; 0666, root-owned), then `linux.devices` (mknod with fileMode/uid/gid;
in a user namespace, where mknod is refused, the host's node is bind-mounted instead), the
/dev/fd, stdin, stdout, stderr and core symlinks, and /dev/ptmx -> pts/ptmx. Every path is
created relative to a dirfd of the rootfs without following symlinks out of it.
"""

from __future__ import annotations

import errno
import os
import stat

from pyoci import TYPE_CHECKING
from pyoci.errors import ConfigError, SysError, why
from pyoci.linux.resolve import clean_path, fd_path, mkdir_all_in_root
from pyoci.linux import syscalls as sc
from pyoci.spec.config import Device

if TYPE_CHECKING:
    from pyoci.spec.config import Spec

DEFAULT_DEVICES: list[Device] = [
    Device("/dev/null", "c", 1, 3, 0o666),
    Device("/dev/zero", "c", 1, 5, 0o666),
    Device("/dev/full", "c", 1, 7, 0o666),
    Device("/dev/random", "c", 1, 8, 0o666),
    Device("/dev/urandom", "c", 1, 9, 0o666),
    Device("/dev/tty", "c", 5, 0, 0o666),
]

DEV_SYMLINKS: list[tuple[str, str]] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
]

_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _uint32(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFFFFFF


def check_devices(spec: dict) -> None:
    """Validate linux.devices; ConfigError names e.g. linux.devices[0].type."""
    devs = (spec.get("linux") or {}).get("devices")
    if devs is None:
        return
    if not isinstance(devs, list):
        raise ConfigError("linux.devices: must be an array")
    for i, d in enumerate(devs):
        where = f"linux.devices[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: must be an object")
        path = d.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{where}.path: {path!r} is not an absolute path")
        if clean_path(path) == "/dev" or clean_path(path) == "/":
            raise ConfigError(f"{where}.path: {path!r} is not a device path")
        t = d.get("type")
        if t not in _TYPE_BITS:
            raise ConfigError(f"{where}.type: unknown device type {t!r} (want c, b, u or p)")
        for k in ("major", "minor"):
            if k in d and not (isinstance(d[k], int) and not isinstance(d[k], bool)
                               and d[k] >= 0):
                raise ConfigError(f"{where}.{k}: must be a non-negative integer")
            if t != "p" and k not in d:
                raise ConfigError(f"{where}.{k}: required for a type {t} device")
        if "fileMode" in d and not _uint32(d["fileMode"]):
            raise ConfigError(f"{where}.fileMode: must be an unsigned 32-bit integer")
        for k in ("uid", "gid"):
            if k in d and not _uint32(d[k]):
                raise ConfigError(f"{where}.{k}: must be an unsigned 32-bit integer")


def device_list(spec: Spec) -> list[Device]:
    """The default devices (unless linux.devices names the same path) plus linux.devices."""
    devs = spec.linux.devices
    given = {clean_path(d.path) for d in devs}
    return [d for d in DEFAULT_DEVICES if d.path not in given] + list(devs)


def _open_parent(root_fd: int, path: str) -> tuple[int, str]:
    path = clean_path(path)
    return mkdir_all_in_root(root_fd, os.path.dirname(path)), os.path.basename(path)


def mknod_device(root_fd: int, dev: Device) -> None:
    """mknod the device inside the rootfs with its mode and owner; an existing node is
    left alone (runc)."""
    parent, name = _open_parent(root_fd, dev.path)
    try:
        mode = (stat.S_IMODE(0o666 if dev.file_mode is None else dev.file_mode)
                | _TYPE_BITS[dev.type])
        rdev = 0 if dev.type == "p" else os.makedev(dev.major, dev.minor)
        old = os.umask(0)
        try:
            os.mknod(name, mode, rdev, dir_fd=parent)
        except FileExistsError:
            return
        finally:
            os.umask(old)
        os.chown(name, 0 if dev.uid is None else dev.uid, 0 if dev.gid is None else dev.gid,
                 dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def bind_device(root_fd: int, dev: Device) -> None:
    """In a user namespace: create an empty file and bind the host's node onto it."""
    parent, name = _open_parent(root_fd, dev.path)
    try:
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
        except FileExistsError:
            pass
        target = sc.openat2(parent, name, os.O_PATH | os.O_NOFOLLOW,
                            resolve=sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS)
    finally:
        os.close(parent)
    try:
        sc.mount(dev.path, fd_path(target), None, sc.MS_BIND, None)
    finally:
        os.close(target)


def create_device(root_fd: int, dev: Device, *, userns: bool, where: str) -> None:
    try:
        if userns and dev.type != "p":
            bind_device(root_fd, dev)
            return
        try:
            mknod_device(root_fd, dev)
        except PermissionError:
            if dev.type == "p":
                raise
            bind_device(root_fd, dev)
    except OSError as e:
        raise SysError(f"{where}: {dev.path}: {why(e)}") from e


def check_existing(root_fd: int, dev: Device, where: str) -> None:
    """A file already at a configured device's path must be that very device
    (config-linux.md#devices: otherwise the runtime MUST generate an error)."""
    parent, name = _open_parent(root_fd, dev.path)
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        os.close(parent)
    same = stat.S_IFMT(st.st_mode) == _TYPE_BITS[dev.type] and (
        dev.type == "p" or st.st_rdev == os.makedev(dev.major, dev.minor))
    if not same:
        raise ConfigError(f"{where}.path: {dev.path} already exists and is not the "
                          "requested device")


def create_devices(spec: Spec, root_fd: int, *, userns: bool) -> None:
    given = spec.linux.devices
    index = {id(d): i for i, d in enumerate(given)}
    for dev in device_list(spec):
        where = f"linux.devices[{index[id(dev)]}]" if id(dev) in index else "default devices"
        if id(dev) in index:
            check_existing(root_fd, dev, where)
        create_device(root_fd, dev, userns=userns, where=where)


def setup_dev_symlinks(root_fd: int) -> None:
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    dev = mkdir_all_in_root(root_fd, "/dev")
    try:
        for src, name in links:
            try:
                os.symlink(src, name, dir_fd=dev)
            except FileExistsError:
                pass
    finally:
        os.close(dev)


def setup_ptmx(root_fd: int) -> None:
    """/dev/ptmx -> pts/ptmx (replacing whatever is there)."""
    dev = mkdir_all_in_root(root_fd, "/dev")
    try:
        try:
            os.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            os.rmdir("ptmx", dir_fd=dev)
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
    finally:
        os.close(dev)


def setup_dev(spec: Spec, root_fd: int, *, userns: bool) -> None:
    """Devices, ptmx and /dev symlinks in the rootfs (when /dev is not a host bind)."""
    create_devices(spec, root_fd, userns=userns)
    try:
        setup_ptmx(root_fd)
        setup_dev_symlinks(root_fd)
    except OSError as e:
        if e.errno == errno.EROFS:
            raise SysError(f"/dev: read-only, cannot create links: {why(e)}") from e
        raise SysError(f"/dev links: {why(e)}") from e
