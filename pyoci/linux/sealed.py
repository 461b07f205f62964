"""Run the command from a read-only view of the interpreter before anything of it enters a
namespace that a container's processes share (runc's CVE-2019-5736 class).

A process pyoci forks into a container's PID namespace runs the host's interpreter until it
executes the user program. Being non-dumpable keeps it out of reach of an ordinary container
process, but not of one with CAP_SYS_PTRACE: that one can open /proc/PID/exe, keep the fd and,
once the file is no longer being executed, reopen it for writing (/proc/self/fd/N) and so
replace the host's interpreter. This concerns the process of `pyoci exec` (always in the
container's namespaces) and the init of `create`/`run` when it joins an existing PID
namespace, shares the host's, or waits for `start` in Python (no waiter: then `exec`'d
processes share its namespace).

The answer, as runc's since 1.1.12: the command executes itself again (same argv and
environment, nothing done yet) from a detached, read-only bind mount of its own executable
(open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_RDONLY) + execveat). Every process it
then forks has that file as /proc/PID/exe: reopening it for writing fails with EROFS, and
the mount is in no mount namespace, so nothing in the container can remount it. An
interpreter already on a read-only mount is used as it is.

What stays open to such a process, as with runc 1.1.5: ptrace itself (code injection
before the execve: CAP_SYS_PTRACE without a user namespace is a host capability), and
/proc/PID/root of an init joining its PID namespace until that init has pivoted (the host's
root: host files can be written through it; closing that needs the init to enter the PID
namespace after pivot_root, with /proc mounted for that namespace, e.g. procfs's pidns=
option of Linux 6.15). Files the interpreter reads (libraries, modules) are not reachable:
/proc/PID/map_files needs CAP_SYS_ADMIN, and pyoci closes them.
"""

from __future__ import annotations

import posix
import sys

_ST_RDONLY = 1


_F_ADD_SEALS, _F_GET_SEALS = 1033, 1034
_F_SEAL_SEAL, _F_SEAL_SHRINK, _F_SEAL_GROW, _F_SEAL_WRITE = 1, 2, 4, 8


def is_sealed() -> bool:
    """Whether this process executes a file on a read-only mount, or a sealed memfd."""
    try:
        if posix.statvfs("/proc/self/exe").f_flag & _ST_RDONLY:
            return True
        fd = posix.open("/proc/self/exe", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        import fcntl

        return bool(fcntl.fcntl(fd, _F_GET_SEALS) & _F_SEAL_WRITE)
    except OSError:
        return False            # not a memfd: EINVAL
    finally:
        posix.close(fd)


def needed() -> bool:
    """Whether reexec() would execute the command again."""
    launcher = sys.modules.get("pyoci.launcher")
    return (getattr(launcher, "launched", False) and posix.geteuid() == 0
            and not is_sealed())


def reexec(argv: list[str] | None = None) -> None:
    """Execute the command again from a read-only view of the interpreter (where a mount
    cannot be made, e.g. without CAP_SYS_ADMIN in the mount namespace's owner: from a sealed
    memfd copy, as runc before 1.1.12); returns only if nothing needs to be done (not the
    launcher's process, not root, already sealed). Raises SysError if neither works."""
    if not needed():    # e.g. not the `pyoci` command's own process: a test calling pyoci
        return
    from pyoci.errors import SysError

    fds: list[int] = []
    try:
        exe = _open(fds, posix.open, "/proc/self/exe", posix.O_PATH | posix.O_CLOEXEC)
        try:
            target = _view(fds, exe)
            if not posix.fstatvfs(target).f_flag & _ST_RDONLY:      # never loop
                raise OSError(30, "the view is not read-only")
        except OSError:
            target = _memfd_copy(fds)
        args = list(argv if argv is not None else sys.orig_argv)
        if sys.executable.startswith("/"):
            args[0] = sys.executable      # the venv's path: prefix and paths as before
        for f in (sys.stdout, sys.stderr):
            f.flush()
        posix.execve(target, args, startup_environ())
    except OSError as e:
        raise SysError("cannot run from a read-only view of the interpreter "
                       f"(CVE-2019-5736 protection): {e.strerror or e}") from None
    finally:
        for fd in fds:
            posix.close(fd)


def _memfd_copy(fds: list[int]) -> int:
    """A sealed memfd holding a copy of the executable (~7 MB for python3.11)."""
    import fcntl

    src = _open(fds, posix.open, "/proc/self/exe", posix.O_RDONLY | posix.O_CLOEXEC)
    fd = _open(fds, posix.memfd_create, "pyoci-python", posix.MFD_CLOEXEC |
               posix.MFD_ALLOW_SEALING)
    size = posix.fstat(src).st_size
    done = 0
    while done < size:
        n = posix.sendfile(fd, src, done, size - done)
        if n <= 0:
            raise OSError(5, "short copy of the interpreter")
        done += n
    posix.fchmod(fd, 0o555)
    fcntl.fcntl(fd, _F_ADD_SEALS, _F_SEAL_SEAL | _F_SEAL_SHRINK | _F_SEAL_GROW |
                _F_SEAL_WRITE)
    return fd


def startup_environ() -> dict[bytes, bytes]:
    """The environment this process was started with (/proc/self/environ): posix.environ
    also holds the LC_CTYPE the interpreter's locale coercion adds, which is not the
    caller's (hooks without `env` inherit the caller's, as runc's do)."""
    try:
        fd = posix.open("/proc/self/environ", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return dict(posix.environ)
    try:
        chunks = []
        while chunk := posix.read(fd, 65536):
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return dict(i.split(b"=", 1) for i in b"".join(chunks).split(b"\0") if b"=" in i)


def _open(fds: list[int], fn, *args, **kw) -> int:
    fd = fn(*args, **kw)
    fds.append(fd)
    return fd


def _view(fds: list[int], exe: int) -> int:
    """An fd of the executable on a detached read-only bind mount: of its directory, so that
    /proc/PID/exe still names it (/python3.11), else of the file itself (named "/")."""
    from pyoci.linux import syscalls as sc

    clone = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC
    ro = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV
    st = posix.fstat(exe)
    try:
        path = posix.readlink("/proc/self/exe")
        d, _, name = path.rpartition("/")
        if path.startswith("/") and name:
            tree = _open(fds, sc.open_tree, sc.AT_FDCWD, d or "/", clone)
            sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH, attr_set=ro)
            fd = _open(fds, posix.open, name, posix.O_PATH | posix.O_CLOEXEC |
                       posix.O_NOFOLLOW, dir_fd=tree)
            got = posix.fstat(fd)
            if (got.st_dev, got.st_ino) == (st.st_dev, st.st_ino):
                return fd
    except OSError:
        pass
    tree = _open(fds, sc.open_tree, exe, "", clone | sc.AT_EMPTY_PATH)
    sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH, attr_set=ro)
    return tree
