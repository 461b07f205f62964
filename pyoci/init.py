"""What runs in the new processes before the user program is executed (the "init" stage).

`pyoci create` forks a *bootstrap* child, which enters/creates the namespaces (user first, with
the parent writing its id maps) and then forks the container *init*: PID 1 of a new PID
namespace, which the bootstrap reports to the parent before exiting. The init builds the root
filesystem, lets the parent run the runtime-namespace hooks, drops into the container's
identity and blocks on exec.fifo until `pyoci start` opens it; then it executes the user program.

Parent and children speak over pyoci.linux.channel (its docstring lists the messages). The
init ends as exec's process does (pyoci.joiner), with pyoci.linux.process.execute: the
process's setup, here with the container's rest (_finish_container) and the wait for `start`
(_wait_for_start) in it, then the execve.
"""

from __future__ import annotations

import _signal   # json, signal and socket cost ~10 ms to import: their C modules do it all
import os
import sys
from pyoci.record import dataclass, field

from pyoci.errors import PyociError, SysError
from pyoci.linux import channel as ch
from pyoci.linux import child
from pyoci.linux import sock as unix
from pyoci.linux import namespaces as nsmod
from pyoci.linux import syscalls as sc
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

    from pyoci.spec.config import Hooks, Process, Spec


@dataclass
class InitContext:
    """Everything the children need: prepared by the parent before the fork, the fds it
    makes afterwards (fifo_fd, console_fd for --console-socket, listener_sock) and
    cgroup_later arrive with its go (_receive_setup)."""

    spec: Spec                              # the parsed config (pyoci.spec.config)
    cid: str
    bundle: str
    rootfs: str
    ns: dict[str, str | None]               # namespace type -> path (None: new)
    chan: ch.Channel                          # the children's end of the channel
    fifo_fd: int = -1                         # O_PATH fd of exec.fifo
    console_fd: int = -1                      # connected --console-socket
    listener_sock: socket.socket | None = None  # connected seccomp listenerPath
    extra_fds: int = 0                        # fds 3..3+extra_fds-1 pass to the process
    extra_env: list[str] = field(default_factory=list)
    no_pivot: bool = False
    no_new_keyring: bool = False
    cgroup_later: bool = False                # the init is added to its cgroup late (until
                                              # the parent says so: _await_cgroup)
    waiter_fd: int = -1                       # sealed memfd of the waiter (linux/waiter.py)
    state: dict = field(default_factory=dict)  # public state skeleton for hooks/listener
    rootless: bool = False                    # started by a user other than root (runc's
                                              # RootlessEUID: no additional groups)


# --- bootstrap (first child) --------------------------------------------------------------

def bootstrap(ctx: InitContext) -> None:
    """Runs in the first child; never returns."""
    try:
        # Nothing in the container may ptrace us or open /proc/PID/exe (the host's
        # interpreter) while we are still pyoci: stay non-dumpable until the execve.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        _close_other_fds(ctx)
        _preload(ctx.spec, ctx)                   # while the parent makes the state dir...
        _receive_setup(ctx)                       # ...and sends exec.fifo & co
        linux = ctx.spec.linux
        fds = nsmod.open_paths(ctx.ns)
        nsmod.join(fds, only=("user",))
        if "user" in ctx.ns and ctx.ns["user"] is None:
            sc.unshare(sc.CLONE_NEWUSER)
            if ctx.rootless:
                # an unprivileged parent may only write our uid_map/gid_map/setgroups while
                # we are dumpable (runc does the same); nothing else runs in the new, still
                # empty user namespace meanwhile
                sc.prctl(sc.PR_SET_DUMPABLE, 1)
            ctx.chan.send(ch.UserNs())
            ctx.chan.expect(ch.Ok)                # the parent wrote uid_map/gid_map
            if ctx.rootless:
                sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if "user" in ctx.ns:
            child.become_root("linux.uidMappings")
        nsmod.join(fds)                           # every other path, mount last
        # a new cgroup namespace is rooted at the cgroup of its creator: when the parent
        # joins the cgroup late, the init creates it once it is in (_await_cgroup)
        flags = nsmod.new_flags(ctx.ns, exclude=("user", "cgroup") if ctx.cgroup_later
                                else ("user",))
        if flags:
            sc.unshare(flags)
        if ctx.ns.get("time", 1) is None and linux.time_offsets:
            nsmod.write_time_offsets(linux.time_offsets)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            container_init(ctx)                   # never returns
        ctx.chan.send(ch.Pid(pid))
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        ctx.chan.fail(e)


def _receive_setup(ctx: InitContext) -> None:
    """The parent's go, with the fds it made after forking us (exec.fifo, the console
    socket) and whether it joins the cgroup late."""
    setup = ctx.chan.expect(ch.BootstrapSetup, 8)
    got = dict(zip(setup.names, setup.fds))
    ctx.cgroup_later = setup.cgroup_later
    ctx.fifo_fd = got.get("fifo", -1)
    if "console" in got:
        ctx.console_fd = got["console"]
    for fd in setup.fds:
        os.set_inheritable(fd, False)             # none of them is the container's


def _close_other_fds(ctx: InitContext) -> None:
    """Close every fd the container must not inherit from pyoci or its caller (state dir
    lock, bundle files, the caller's stray descriptors): only stdio, the preserved fds and
    the init's own channels stay."""
    keep = {ctx.chan.fileno(), ctx.fifo_fd, ctx.console_fd}
    if ctx.listener_sock is not None:
        keep.add(ctx.listener_sock.fileno())
    child.close_fds_except(keep, ctx.extra_fds)


# --- container init (second child, PID 1 in a new pid namespace) --------------------------

def container_init(ctx: InitContext) -> None:
    """Runs in the container's init; never returns."""
    try:
        _container_init(ctx)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        ctx.chan.fail(e)


def _container_init(ctx: InitContext) -> None:
    spec = ctx.spec
    proc = spec.process
    assert proc is not None                       # create refuses a config without one
    linux = spec.linux
    setup = ctx.chan.expect(ch.InitSetup, 253)    # the parent recorded our pid
    # idmapped mounts and bind sources the parent opened on the host side (index in
    # mounts[] -> fd)
    fds = setup.fds
    mount_fds = dict(zip(setup.idmap, fds)) or None
    source_fds = dict(zip(setup.sources, fds[len(setup.idmap):])) or None
    ctx.state["pid"] = setup.pid                  # as seen by the host, for hooks
    netdev_addrs = setup.netdev
    child.default_signals(also=(_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP))
    os.setsid()
    from pyoci.linux import process as procmod

    procmod.exec_cpu_affinity(proc, "initial")
    if ctx.ns.get("network", 1) is None:
        nsmod.loopback_up()
    if netdev_addrs:
        from pyoci.linux import netdev

        netdev.configure_in_container(netdev_addrs)
    from pyoci.linux import mounts, rootfs

    own_ns = "mount" in ctx.ns          # else the runtime's (see mountinfo.mounts_under)
    if any(m.type == "cgroup" for m in spec.mounts):
        _await_cgroup(ctx)               # a cgroup mount shows the init's cgroup
    rootfs.prepare_rootfs(spec, ctx.rootfs, userns="user" in ctx.ns, mount_fds=mount_fds,
                          bundle=ctx.bundle, source_fds=source_fds, own_ns=own_ns)
    for fd in fds:
        os.close(fd)
    _await_cgroup(ctx)                   # before hooks and anything forked
    ctx.chan.send(ch.Hooks())
    ctx.chan.expect(ch.Ok)                        # prestart + createRuntime ran
    hooks = spec.hooks
    if hooks.create_container:
        from pyoci.linux.hooks import run_hooks

        # without their own env they get process.env, as runc's init (HOME comes later)
        run_hooks(hooks, "createContainer", ctx.state,
                  inherit=child.env_dict(proc.env + ctx.extra_env))
    # After pivot_root the host's files (Python modules, libseccomp) are out of reach: load
    # every module the rest of the init needs now, and build the seccomp program here.
    _preload(spec)
    seccomp = linux.seccomp
    seccomp_prog = None
    if seccomp is not None:
        from pyoci.linux import seccomp as seccomp_mod

        seccomp_prog = seccomp_mod.build(seccomp)
    if own_ns:
        rootfs.enter_rootfs(ctx.rootfs, ctx.no_pivot)
        if rootfs.needs_dev_setup(mounts.parse_mounts(spec)):
            child.reopen_dev_null()
    else:                               # as runc: no pivot_root without a mount namespace
        os.chroot(os.path.realpath(ctx.rootfs))
        os.chdir("/")
    launch = procmod.Launch(
        process=proc, chan=ctx.chan, personality=linux.personality,
        console_fd=ctx.console_fd, preserve=ctx.extra_fds, extra_env=ctx.extra_env,
        seccomp=seccomp_prog, rootless=ctx.rootless)
    ctx.console_fd = -1                           # execute() closes it
    if seccomp_prog and seccomp is not None and seccomp.listener_path:
        launch.notify = lambda fd: _send_listener(ctx, fd)
    # The filter applies to what pyoci does after loading it too: it is the last thing
    # before the program's execve (the waiter's with the waiter).
    procmod.execute(launch, setup=lambda: _finish_container(ctx, own_ns),
                    wait=lambda path, env: _wait_for_start(ctx, launch, path, env))


def _finish_container(ctx: InitContext, own_ns: bool) -> None:
    """What only the init does to the container once it is in its root (runc's order):
    hostname, domainname, sysctls, the read-only root and masked paths, the session keyring,
    the memory policy."""
    from pyoci.linux import rootfs

    spec = ctx.spec
    linux = spec.linux
    if spec.hostname:
        sc.sethostname(spec.hostname)
    if spec.domainname:
        sc.setdomainname(spec.domainname)
    for key, value in linux.sysctl.items():
        _write_sysctl(key, value)
    rootfs.finish_rootfs(spec, own_ns)
    if not ctx.no_new_keyring:
        from pyoci.linux import keyring

        keyring.join_session_keyring(ctx.cid)
    if linux.memory_policy:
        from pyoci.linux import mempolicy

        mempolicy.apply(linux.memory_policy)


def _wait_for_start(ctx: InitContext, launch, path: str, env: dict[str, str]) -> None:
    """Between the process's setup and its execve: report Ready, then wait for `start`
    (the waiter, or this process) and run the startContainer hooks."""
    proc = launch.process
    nnp = proc.no_new_privileges
    prog = launch.seccomp
    waiter_argv = _prepare_wait(ctx, proc, prog if nnp else None, path)
    # With the waiter and without no_new_privs the filter is loaded here, after "ready"
    # (no sendto under it): the runtime waits for the socket's EOF (close-on-exec) or the
    # load's error. waiter.uses() checked that the filter lets the waiter run.
    load_here = waiter_argv is not None and bool(prog) and not nnp
    if prog and not nnp and not load_here:
        _probe_filter(prog)             # loaded after `start`: its errors belong to create
    seccomp = ctx.spec.linux.seccomp
    if prog and seccomp is not None and seccomp.listener_path:
        ctx.listener_sock = _receive_listener(ctx)
    ctx.chan.send(ch.Ready())
    if waiter_argv is not None:
        # The waiter waits, loads the NNP seccomp filter and executes the program: the
        # created container's init is then a tiny process instead of this interpreter.
        from pyoci.linux import waiter

        if load_here:
            _install_or_report(ctx, prog)
            launch.seccomp = None
        waiter.execute(ctx.waiter_fd, waiter_argv, env)  # returns only if that failed
    ctx.chan.close()
    # Block until `pyoci start` opens the fifo for reading (re-open the O_PATH fd through
    # /proc: the fifo's host path is not reachable from inside the rootfs).
    old = _die_on_termination_signals()
    fd = os.open(f"/proc/self/fd/{ctx.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    for sig, handler in old:
        _signal.signal(sig, handler)
    os.close(ctx.fifo_fd)
    _start_container_hooks(ctx.spec.hooks, ctx.state, fd, env)
    os.write(fd, b"0")                            # `start` succeeds
    os.close(fd)


def _send_listener(ctx: InitContext, notify_fd: int) -> None:
    """The filter's notify fd to the seccomp agent, over the connection the runtime made."""
    from pyoci.linux import seccomp as seccomp_mod

    seccomp = ctx.spec.linux.seccomp
    if ctx.listener_sock is None or seccomp is None:
        return
    seccomp_mod.send_listener(ctx.listener_sock, notify_fd, ctx.state,
                              seccomp.listener_metadata)
    ctx.listener_sock.close()


def _receive_listener(ctx: InitContext) -> socket.socket:
    """The connection to the seccomp agent (linux.seccomp.listenerPath), which the parent
    makes on the host when the init asks, right before "ready": a setup that fails earlier
    never leaves the agent a connection without the listener fd."""
    ctx.chan.send(ch.Listener())
    fds = ctx.chan.expect(ch.Ok, 1).fds
    if len(fds) != 1:
        raise SysError("linux.seccomp.listenerPath: the runtime sent no connection")
    os.set_inheritable(fds[0], False)
    return unix.socket(fileno=fds[0])


def _probe_filter(program: tuple[bytes, int]) -> None:
    """Load the filter in a short-lived child, so that one the kernel refuses fails create
    (as runc's, loaded then without no_new_privs) although this init loads it after start."""
    from pyoci.linux import seccomp as seccomp_mod

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                fd = seccomp_mod.install(*program)
                if fd is not None:
                    os.close(fd)
            except BaseException as e:  # noqa: BLE001 - reported to the init
                os.write(w, child.error_message(e).encode(errors="replace")[:4000])
        finally:
            os._exit(0)
    os.close(w)
    try:
        msg = os.read(r, 4096)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if msg:
        raise SysError(msg.decode(errors="replace"))


def _install_or_report(ctx: InitContext, program: tuple[bytes, int]) -> None:
    """Load the filter after "ready": a failure still reaches the runtime (which waits for
    the socket's EOF after "ready"), then the init exits."""
    from pyoci.linux import seccomp as seccomp_mod

    try:
        seccomp_mod.install(*program)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        ctx.chan.fail(e)


def _await_cgroup(ctx: InitContext) -> None:
    """Wait for the parent's word that the init is in the container's cgroup (sent once, when
    the join overlaps the setup: ctx.cgroup_later), then create the cgroup namespace if one
    is wanted."""
    if not ctx.cgroup_later:
        return
    ctx.cgroup_later = False
    ctx.chan.expect(ch.Cgroup)
    if ctx.ns.get("cgroup", 1) is None:
        sc.unshare(sc.CLONE_NEWCGROUP)


_TERM_SIGNALS = (_signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGTERM,
                 _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGALRM)


def _prepare_wait(ctx: InitContext, proc: Process, program: tuple[bytes, int] | None,
                  path: str) -> list[str] | None:
    """Before "ready", so that errors still reach the runtime: block the terminating signals
    (one sent as soon as `create` returns stays pending, across the execve of the waiter
    too, until a handler is in place) and, if the waiter waits, return its argv."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, _TERM_SIGNALS)
    if ctx.waiter_fd < 0:
        return None
    from pyoci.linux import waiter

    return waiter.argv(ctx.fifo_fd, proc, program, path)


def _die_on_termination_signals() -> list:
    """While the init waits for `start`, a terminating signal ends it, as it ends runc's
    waiting init: as PID 1 of its namespace with default handlers the kernel would drop
    SIGTERM & co., and `kill ID TERM` of a created container would do nothing."""
    old = []
    for sig in _TERM_SIGNALS:
        old.append((sig, _signal.signal(sig, lambda n, _f: os._exit(128 + n))))
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, _TERM_SIGNALS)   # see _prepare_wait
    return old


def _start_container_hooks(hooks: Hooks, state: dict, fifo: int,
                           env: dict[str, str]) -> None:
    """Run the startContainer hooks while `start` waits on the fifo; on a failure tell it
    ("1" + the message) and exit: the container stops, the user program never runs."""
    if not hooks.start_container:
        return
    from pyoci.linux.hooks import run_hooks

    try:
        run_hooks(hooks, "startContainer", state, inherit=env)   # the process's env
    except PyociError as e:
        os.write(fifo, b"1" + str(e).encode(errors="replace")[:4000])  # < PIPE_BUF: atomic
        os._exit(1)


def _preload(spec: Spec, ctx: InitContext | None = None) -> None:
    """Import what the init uses after pivot_root (lazy imports would fail there). With ctx
    (the bootstrap's call, in the host's mount namespace) also copy the waiter into a sealed
    memfd: its host file is out of reach after pivot_root."""
    from pyoci.linux import keyring, process  # noqa: F401

    if spec.process is not None:
        process.preload(spec.process)
    if spec.hooks.start_container:
        import select  # noqa: F401

        from pyoci.linux import hooks as _h  # noqa: F401
    if spec.linux.memory_policy:
        from pyoci.linux import mempolicy  # noqa: F401
    # seccomp: install() and the listener's send_listener() need ctypes, pyoci.linux.sock
    # and pyoci.jsonio, all loaded already
    if ctx is not None:
        from pyoci.linux import waiter

        ctx.waiter_fd = waiter.load(spec.raw)   # its rule reads the document (see uses)


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise SysError(f"linux.sysctl: {key}={value}: {e.strerror}") from None
