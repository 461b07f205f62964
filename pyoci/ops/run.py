"""`pyoci run`: create and start (runc's `run`). Detached, it returns once the program runs;
in the foreground it forwards the signals it gets to the container's init, proxies the
terminal (process.terminal without --console-socket: the pty's master comes back to this
process), waits for the init and deletes the container (unless --keep), exiting with the
init's code (128+N when signal N killed it)."""

from __future__ import annotations

import os

from pyoci import state as st_mod
from pyoci.errors import PyociError
from pyoci.ops.create import CreateOptions, create
from pyoci.ops.delete import delete     # lean modules (pyoci.state), cheap to import
from pyoci.ops.start import start


def run(opts: CreateOptions) -> int:
    """create + start; in the foreground wait for the process, forward signals, proxy the
    terminal, delete the container and return its exit code (128+N if killed by signal N).
    With keep (--keep) the container is never deleted, as runc's (its shouldDestroy): it
    stays, stopped or as `start` left it, for `state` and `delete`."""
    if opts.detach:
        st = create(opts)
        if st_mod.FAULT:
            st_mod.fault("run:created")
        try:
            start(opts.root, opts.cid)
        except BaseException:
            if not opts.keep:
                delete(opts.root, opts.cid, force=True)
            raise
        return 0
    from pyoci.linux import syscalls as sc

    sc.set_child_subreaper()
    console_parent = console_child = None
    from pyoci.spec import load as spec_load

    spec = spec_load.read_config(os.path.abspath(opts.bundle))
    want_tty = bool((spec.get("process") or {}).get("terminal")) and not opts.console_socket
    if want_tty:
        from pyoci.linux import sock as unix

        console_parent, console_child = unix.socketpair(unix.AF_UNIX, unix.SOCK_STREAM)
    from pyoci.foreground import Forwarder, wait_exit

    forward = Forwarder()
    try:
        st = create(opts, foreground_console=console_child)
    except BaseException:
        forward.restore()
        raise
    master = None
    forward.to(st.pid)
    try:
        if console_child is not None:
            console_child.close()
            from pyoci.linux import terminal

            master = terminal.recv_master(console_parent)
        if st_mod.FAULT:
            st_mod.fault("run:created")
        start(opts.root, opts.cid)
        if st_mod.FAULT:
            st_mod.fault("run:started")
        if master is not None:
            from pyoci.linux import terminal

            terminal.proxy(master, lambda: st_mod.init_alive(st))
        code = wait_exit(st.pid)
    finally:
        forward.restore()
        if master is not None:
            os.close(master)
        if console_parent is not None:
            console_parent.close()
        if not opts.keep:
            try:
                delete(opts.root, opts.cid, force=True)
            except PyociError:
                pass
    return code
