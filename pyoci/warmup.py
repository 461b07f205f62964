"""Start the kernel's cgroup-attach grace period while the interpreter is still importing.

Moving a task between cgroups takes the kernel's global cgroup_threadgroup_rwsem for writing.
Its first writer after a quiet spell waits for a full RCU grace period (rcu_sync_enter: 10-18
ms on this class of machine; runc waits as long), and the lock then stays on its fast path
until one grace period after the last writer. `create` and `run` need that write (the
container's init joins its cgroup) about 15-25 ms after the command starts, most of it spent
importing and validating. So the launcher starts one such write at once, off the critical
path: a thread moves a placeholder child into a scratch cgroup that pyoci creates for it
(a child of its own cgroup on the cgroup2 mount, named after the command's pid) and then
removes both. The container's own write later finds the lock fast (or waits for the same
grace period, never longer).

Best effort and invisible: any failure (no cgroup2 mount, no permission) just skips it. Only
built-in modules are used: this runs before anything else is imported.
"""

import posix

_state: list = []      # [lock released when done] while a warm-up runs


def _cgroup2_dir() -> str | None:
    """This process's own cgroup on the cgroup2 mount (hybrid: /sys/fs/cgroup/unified)."""
    try:
        fd = posix.open("/proc/self/cgroup", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            data = posix.read(fd, 65536).decode()
        finally:
            posix.close(fd)
    except OSError:
        return None
    own = None
    for line in data.splitlines():
        if line.startswith("0::"):
            own = line[3:]
    if own is None or "\n" in own or ".." in own.split("/"):
        return None
    for mnt in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            posix.stat(mnt + "/cgroup.controllers")     # cgroup2 only has this file
        except OSError:
            continue
        return mnt + own.rstrip("/")
    return None


def start() -> None:
    """Begin the warm-up (returns at once); finish() must be called before the process ends."""
    if _state:
        return
    base = _cgroup2_dir()
    if base is None:
        return
    scratch = f"{base}/pyoci-warmup-{posix.getpid()}"
    try:
        posix.mkdir(scratch, 0o700)
    except OSError:
        return
    try:
        r, w = posix.pipe2(posix.O_CLOEXEC)
    except OSError:
        _rmdir(scratch)
        return
    try:
        pid = posix.fork()
    except OSError:
        posix.close(r)
        posix.close(w)
        _rmdir(scratch)
        return
    if pid == 0:                    # the placeholder: wait until the write end closes
        try:
            posix.close(w)
            posix.read(r, 1)
        finally:
            posix._exit(0)
    posix.close(r)
    import _thread

    done = _thread.allocate_lock()
    done.acquire()
    _state.append(done)
    _thread.start_new_thread(_move, (scratch, pid, w, done))


def _move(scratch: str, pid: int, w: int, done) -> None:
    try:
        try:
            fd = posix.open(scratch + "/cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC)
            try:
                posix.write(fd, str(pid).encode())    # waits for the grace period
            finally:
                posix.close(fd)
        except OSError:
            pass
        posix.close(w)                                  # the placeholder exits
        try:
            posix.waitpid(pid, 0)
        except ChildProcessError:
            pass                                        # a subreaper's wait reaped it
        _rmdir(scratch)
        _collect(scratch.rsplit("/", 1)[0])
    finally:
        done.release()


def _collect(base: str) -> None:
    """Remove the scratch cgroups of pyoci processes killed during their warm-up (a killed
    `create` cannot remove its own; nothing records it for `delete --force`): an empty
    pyoci-warmup-PID whose PID is gone. Off the critical path, in the warm-up thread."""
    try:
        names = posix.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith("pyoci-warmup-") or not name[13:].isdigit():
            continue
        try:
            posix.kill(int(name[13:]), 0)
            continue                    # its process lives: its own to remove
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            posix.rmdir(f"{base}/{name}")
        except OSError:
            pass


def _rmdir(path: str) -> None:
    import time

    for _ in range(200):
        try:
            posix.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.001)      # the placeholder's exit is still being accounted


def finish() -> None:
    """Wait for the warm-up thread (placeholder reaped, scratch cgroup removed)."""
    if _state:
        done = _state.pop()
        done.acquire()
        done.release()
