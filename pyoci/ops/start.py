"""`start ID`: release a created container's init (it waits on exec.fifo), then run the
poststart hooks (warnings only). Built-in modules only unless there are hooks to run."""

import posix
import time

from pyoci import state

_O_RDONLY, _O_NONBLOCK, _O_CLOEXEC = 0, 0o4000, 0o2000000


def start(root: str, cid: str) -> None:
    st = state.load(root, cid)
    with state.Lock(st.dir):
        if st.creating is not None:       # its create may have ended while we waited
            st = state.load(root, cid)
        status = state.status(st)
        if status == "stopped":
            from pyoci.errors import StateError

            raise StateError("cannot start a container that has stopped")
        if status != "created":
            from pyoci.errors import StateError

            raise StateError(f"cannot start an already {status} container")
        release(st)
    hooks = state.config_hooks(st, b"poststart")
    if hooks:
        from pyoci.linux.hooks import run_hooks
        from pyoci.spec import config

        run_hooks(config.Hooks.parse(hooks), "poststart", state.public_state(st, "running"),
                  warn_only=True)


def release(st: state.State) -> None:
    """Open exec.fifo for reading: the init's blocked open returns, it writes one byte ("0",
    or "1" and a message when a startContainer hook failed) and executes the user program.
    Then the fifo is removed (status becomes running)."""
    fifo = f"{st.dir}/{state.FIFO}"
    fd = posix.open(fifo, _O_RDONLY | _O_NONBLOCK | _O_CLOEXEC)
    try:
        # Blocking reads: the init blocked in its open() for writing already counts as a
        # writer, so a read returns its byte at once; b"" (no writer yet, or gone) polls.
        posix.set_blocking(fd, True)
        delay = 0.0002
        while True:
            alive = state.init_alive(st)          # before the read: a last byte is not lost
            try:
                data = posix.read(fd, 1)
            except BlockingIOError:
                data = None
            if data:
                break
            if not alive:
                from pyoci.errors import StateError

                raise StateError("container init exited before it could be started")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        failure = b""
        if data != b"0":
            posix.set_blocking(fd, False)
            try:
                failure = posix.read(fd, 4096)
            except BlockingIOError:
                pass
    finally:
        posix.close(fd)
    posix.unlink(fifo)
    if data != b"0":
        from pyoci.errors import HookError

        raise HookError(failure.decode(errors="replace") or "a startContainer hook failed")


def run(root: str, cid: str) -> int:
    start(root, cid)
    return 0
