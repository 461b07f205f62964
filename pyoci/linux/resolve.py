"""Paths inside the container's rootfs, resolved without ever leaving it.

Mount targets are never looked up by path string: every destination is resolved with
openat2(RESOLVE_IN_ROOT) from a dirfd of the rootfs, missing components are created with
mkdirat relative to the resolved parent, and the mount goes onto /proc/self/fd/N of an O_PATH
fd of the target (runc's CVE-2021-30465 fix), so a symlink inside the rootfs can never send a
mount out of it. After pivot_root, open_nofollow opens an absolute path refusing every
symlink on the way."""

from __future__ import annotations

import errno
import os
import stat

from pyoci.cgroups import paths as cgpaths
from pyoci.errors import SysError
from pyoci.linux import syscalls as sc


def clean_path(path: str) -> str:
    """Absolute, lexically cleaned container path ("a/../b" -> "/b"; ".." stops at /): runc's
    CleanPath of "/" + path, which pyoci.cgroups.paths holds."""
    return cgpaths.clean_path("/" + path)


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


def real_path_in_root(fd: int, rootfs: str) -> str:
    """Path of fd relative to rootfs, as a container path ("/proc/sys")."""
    p = os.readlink(fd_path(fd))
    root = rootfs.rstrip("/")
    if p == root:
        return "/"
    if p.startswith(root + "/"):
        return p[len(root):]
    raise SysError(f"mount target {p} escaped the rootfs {rootfs}")


def open_nofollow(path: str) -> int | None:
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
