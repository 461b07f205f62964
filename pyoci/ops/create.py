"""`pyoci create`: the container made, its init waiting for `start` (runc's `create`).

The config is read and checked (nothing is made for a config that is refused), the
bootstrap child forked (pyoci.init: it enters the namespaces and forks the container's
init) while this process makes the cgroup, the state directory and exec.fifo; then the
children's requests over pyoci.linux.channel are served (id maps, the init's pid, fds made
on the host, the runtime-namespace hooks, the seccomp agent's connection) until the init is
ready. Whatever fails, nothing is left behind (abort_create, with the Rollback record);
whatever kills this process midway, `delete --force` finds what was made (state.json's
"creating" record). `pyoci run` is create and start (pyoci.ops.run); `restore`
(pyoci.criu) shares the checks and the rollback.
"""

from __future__ import annotations

import _signal   # not json, signal, socket: their C modules do it, without ~10 ms of imports
import os
import time
from pyoci.record import dataclass

from pyoci import TYPE_CHECKING, jsonio
from pyoci import state as st_mod
from pyoci.errors import ContainerExists, PyociError, SysError

if TYPE_CHECKING:
    from pyoci.spec import config


@dataclass
class CreateOptions:
    root: str
    cid: str
    bundle: str = "."
    pid_file: str | None = None
    console_socket: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0
    systemd_cgroup: bool = False
    rootless_cgroups: bool = False     # --rootless: a cgroup we may not make is skipped
    detach: bool = True            # create is always detached; run may be foreground
    keep: bool = False             # run --keep: never delete the container (runc)


# --- helpers --------------------------------------------------------------------------------

def rfc3339_now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    st_mod.write_atomic(path, str(pid).encode(), 0o644)


def _listen_fds() -> int:
    """systemd socket activation fds passed through, as runc does (LISTEN_FDS for us)."""
    n = os.environ.get("LISTEN_FDS")
    if not n or not n.isdigit():
        return 0
    pid = os.environ.get("LISTEN_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return 0
    return int(n)


def check_config(spec: dict, bundle: str, opts: CreateOptions) -> str:
    """Everything that can be refused before anything is created; returns the rootfs path."""
    from pyoci.spec import load as spec_load

    spec_load.validate(spec)
    proc = spec.get("process")
    if not proc:
        raise PyociError("config.json: process: required to create a container")
    root = spec.get("root") or {}
    rootfs = root.get("path", "")
    if not rootfs:
        raise PyociError("config.json: root.path: required")
    rootfs = os.path.realpath(os.path.join(bundle, rootfs))
    if not os.path.isdir(rootfs):
        raise PyociError(f"config.json: root.path: {rootfs} is not a directory")
    if proc.get("terminal") and not opts.console_socket and opts.detach:
        raise PyociError("process.terminal: cannot allocate a tty without --console-socket "
                         "when detached")
    if opts.console_socket and not proc.get("terminal"):
        raise PyociError("--console-socket: given but process.terminal is false")
    ns = spec_load.namespaces(spec)
    from pyoci.linux import namespaces as nsmod

    for t, path in ns.items():
        if path:
            nsmod.check_path_type(t, path)
    linux = spec.get("linux") or {}
    spec_load.check_process(proc, linux)
    if linux.get("seccomp"):
        from pyoci.linux import seccomp

        seccomp.check(linux["seccomp"])
    if spec.get("hooks"):
        from pyoci.linux import hooks

        hooks.check(spec["hooks"])
    from pyoci.linux import rootfs as rootfs_mod

    rootfs_mod.check(spec, bundle)
    if linux.get("netDevices"):
        from pyoci.linux import netdev

        netdev.check(linux["netDevices"], ns)
    if linux.get("memoryPolicy"):
        from pyoci.linux import mempolicy

        mempolicy.check(linux["memoryPolicy"])
    if linux.get("intelRdt") and not os.path.exists("/sys/fs/resctrl/schemata"):
        raise PyociError("linux.intelRdt: Intel RDT (resctrl) is not supported or not "
                         "mounted on this host")
    return rootfs


def _seal(spec: dict) -> None:
    """Unless the init will be alone in a new PID namespace until it executes the sealed
    waiter, run the command again from a read-only view of the interpreter (see
    pyoci.linux.sealed): processes of another container (a joined or the host's PID
    namespace) or `exec`'d ones (the Python init waiting for `start`) could see it. The
    config is not validated yet: whatever looks odd seals (the checks then refuse it)."""
    from pyoci.linux import sealed, waiter
    from pyoci.spec import load as spec_load

    try:
        alone = (spec_load.namespaces(spec).get("pid", "") is None
                 and waiter.available(spec))
    except Exception:  # noqa: BLE001 - a malformed config: the checks will say what
        alone = False
    if alone or not sealed.needed():
        return
    from pyoci import warmup

    warmup.finish()         # its scratch cgroup would outlive the execve
    sealed.reexec()


# --- create ---------------------------------------------------------------------------------

@dataclass
class Rollback:
    """What a failed create (or restore) undoes: what it started, made and ran so far."""

    bootstrap: int = 0                 # pid of the bootstrap child, until it exited
    init: int = 0                      # pid of the container's init, once known
    cgroup_join: _CgroupJoin | None = None   # still adding to the cgroup (a thread)
    cgroup_made: bool = False          # the cgroup is (being) created: destroy it
    hooks_ran: bool = False            # prestart/createRuntime ran: poststop runs
    dir_made: bool = False             # the state directory is this create's
    host_mounts: dict[int, str] | None = None   # no mount namespace: those before (undo)
    rootfs: str = ""


def create(opts: CreateOptions, *, foreground_console=None) -> st_mod.State:
    """Create the container and leave its init waiting on exec.fifo; returns its State.
    On any error nothing is left behind (state dir, cgroup, processes)."""
    from pyoci import init as init_mod
    from pyoci.linux import channel as ch
    from pyoci.spec import config, load as spec_load

    st_mod.check_id(opts.cid)
    bundle = os.path.abspath(opts.bundle)
    doc = spec_load.read_config(bundle)
    _seal(doc)                        # before the checks: they would be done twice
    rootfs = check_config(doc, bundle, opts)
    spec = config.parse(doc)          # what everything from here on reads
    ns = spec.linux.namespace_paths()
    root = st_mod.ensure_root(opts.root)
    cdir = st_mod.container_dir(root, opts.cid)
    st = st_mod.State(id=opts.cid, bundle=bundle, rootfs=rootfs, created=rfc3339_now(),
                      annotations=spec.annotations, oci_version=spec.oci_version, dir=cdir)

    # The bootstrap child is forked as soon as the config is known to be valid: it loads
    # what the init needs (~2 ms) while this process sets up the cgroup manager, the state
    # directory, exec.fifo and the sockets, which it then sends over (_send_setup).
    listen = _listen_fds()
    # Without a mount namespace the init mounts in ours: what appears under the rootfs from
    # now on is the container's (recorded in the state, unmounted at delete or on failure)
    host_mounts = None
    if "mount" not in ns:
        from pyoci.linux import mountinfo

        host_mounts = mountinfo.mounts_under(rootfs)
    chan, child_chan = ch.Channel.pair(
        "container init", "container init exited during setup",
        "the runtime", "the runtime went away during container setup")
    public = st_mod.public_state(st, "creating")
    ctx = init_mod.InitContext(
        spec=spec, cid=opts.cid, bundle=bundle, rootfs=rootfs,
        ns=ns, chan=child_chan,
        console_fd=foreground_console.fileno() if foreground_console is not None else -1,
        extra_fds=listen + opts.preserve_fds,
        extra_env=[f"LISTEN_FDS={listen}", "LISTEN_PID=1"] if listen else [],
        no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring, state=public,
        rootless=os.geteuid() != 0)
    pid = os.fork()
    if pid == 0:
        chan.close()
        init_mod.bootstrap(ctx)           # never returns
        os._exit(1)
    child_chan.close()
    if st_mod.FAULT:
        st_mod.fault("create:forked")
    ctx_sockets: list = [chan]
    rs = Rollback(bootstrap=pid, host_mounts=host_mounts, rootfs=rootfs)
    cg = None
    try:
        linux = spec.linux
        from pyoci import cgroups

        cg = cgroups.new_manager(linux.cgroups_path or None, opts.cid,
                                 systemd=opts.systemd_cgroup)
        cg.check(linux.resources)
        if opts.rootless_cgroups:
            cg = _rootless_cgroup(cg, linux, rs)
        try:
            os.mkdir(cdir, 0o700)
        except FileExistsError:
            raise ContainerExists(opts.cid) from None
        rs.dir_made = True
        if host_mounts is not None:       # for delete --force if this process dies midway
            st_mod.write_atomic(os.path.join(cdir, st_mod.MOUNTS_BEFORE), jsonio.dumps(
                {"rootfs": rootfs, "before": sorted(host_mounts)}).encode())
        if st_mod.FAULT:
            st_mod.fault("create:dir")
        with st_mod.Lock(cdir):
            _create_in(opts, spec, st, cg, ctx_sockets, rs, chan, public, ctx.ns)
    except BaseException as e:
        abort_create(st, spec, cg, rs)
        for s in ctx_sockets:
            s.close()
        if isinstance(e, KeyboardInterrupt):
            raise PyociError("interrupted") from None
        raise
    for s in ctx_sockets:
        s.close()
    return st


_DENIED = (1, 13, 30)     # EPERM, EACCES, EROFS: runc's isIgnorableError


def _rootless_cgroup(cg, linux: config.Linux, rs: Rollback):
    """Rootless cgroups (runc's rules): make the container's cgroup now; where the caller
    may not (EPERM, EACCES, EROFS), go on without one if the config neither names a
    cgroupsPath nor asks for a limit, else fail saying what needs root. A delegated,
    writable subtree (cgroup v2) is used like any other. Devices rules are not applied:
    an unprivileged caller cannot load a device program (runc ignores them too).
    Returns the manager, or None when the container runs in the caller's cgroup."""
    from pyoci import log

    res = linux.resources
    if res and "devices" in res:
        linux.resources = res = {k: v for k, v in res.items() if k != "devices"}
    rs.cgroup_made = True
    if hasattr(cg, "rootless"):
        cg.rootless = True
    try:
        cg.create()
        return cg
    except SysError as e:
        if getattr(e, "errno", None) not in _DENIED:
            raise
        try:
            cg.destroy()
        except Exception:  # noqa: BLE001 - what it made is ours; nothing else to do
            pass
        rs.cgroup_made = False
        if linux.cgroups_path:
            raise SysError(f"linux.cgroupsPath: {e} (a rootless container can only use a "
                           "cgroup its user may write: delegate one, or leave cgroupsPath "
                           "empty)") from None
        limits = sorted(k for k, v in (res or {}).items() if v)
        if limits:
            raise SysError(f"linux.resources.{limits[0]}: cannot set the {limits[0]} limit: "
                           f"a rootless container could not create or join a cgroup "
                           f"({e})") from None
        log.warning("rootless: running without a cgroup of its own: %s", e)
        return None


def _create_in(opts, spec, st, cg, socks, rs, chan, public, ns) -> None:
    from pyoci.linux import channel as ch
    from pyoci.linux import namespaces as nsmod

    pid = rs.bootstrap
    st_mod.write_atomic(os.path.join(st.dir, st_mod.CONFIG_FILE),
                        jsonio.dumps(spec.raw).encode())
    # Recorded before anything is made: a create killed from here on leaves a container
    # that `state` and `list` show ("creating") and `delete --force` removes whole.
    me, boot = st_mod.proc_stat(os.getpid()), st_mod.proc_stat(pid)
    st.creating = {"creator": [os.getpid(), me[1] if me else 0],
                   "bootstrap": [pid, boot[1] if boot else 0]}
    if cg is not None:
        st.cgroup = _planned_cgroup(cg)
    st_mod.save(st)
    if st_mod.FAULT:
        st_mod.fault("create:recorded")
    fifo = os.path.join(st.dir, st_mod.FIFO)
    os.mkfifo(fifo, 0o622)
    os.chmod(fifo, 0o622)
    fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
    setup = ch.BootstrapSetup(names=["fifo"])
    fds = [fifo_fd]
    if opts.console_socket:
        from pyoci.linux import terminal

        cs = terminal.connect_console_socket(opts.console_socket)
        socks.append(cs)
        setup.names.append("console")
        fds.append(cs.fileno())
    linux = spec.linux
    background = bool(cg is not None and getattr(cg, "join_in_background", False))
    if cg is not None:
        rs.cgroup_made = True          # (destroy removes what exists of it)
        if not background:
            cg.create()
    # The first cgroup.procs write of a while waits for an RCU grace period (the kernel's
    # cgroup_threadgroup_rwsem: 10-16 ms here), holding cgroup_mutex, so a cgroup mkdir waits
    # as long (pyoci.warmup starts that period early). With a driver whose create()/add() are
    # plain mkdirs and writes, they run in a thread while the children set up namespaces
    # and the rootfs; the init is added once its pid is known (fast then) and told before
    # anything needs the cgroup.
    cgroup_join = None
    if cg is not None:
        if background:
            cgroup_join = _CgroupJoin(cg, pid)
            rs.cgroup_join = cgroup_join
        else:
            cg.add(pid)
            if cg.owned():
                st.cgroup = _planned_cgroup(cg)   # systemd: the unit is started
                st_mod.save(st)
            if st_mod.FAULT:
                st_mod.fault("create:cgroup")
            _apply_resources(cg, linux.resources)
    # the bootstrap's go: what it could not inherit (made after the fork) comes with it
    setup.cgroup_later = background
    chan.send(setup, fds)
    os.close(fifo_fd)
    hooks = spec.hooks
    while True:
        msg = chan.recv()
        if isinstance(msg, ch.UserNs):
            nsmod.write_id_maps(pid, linux.uid_mappings, linux.gid_mappings)
            chan.send(ch.Ok())
        elif isinstance(msg, ch.Pid):
            init_pid = msg.pid
            rs.init = init_pid
            os.waitpid(pid, 0)
            rs.bootstrap = 0
            ps = st_mod.proc_stat(init_pid)
            if ps is None:
                raise SysError("container init exited during setup")
            st.pid, st.start_time = init_pid, ps[1]
            st.creating["bootstrap"] = None
            st_mod.save(st)
            if st_mod.FAULT:
                st_mod.fault("create:pid")
            public["pid"] = init_pid
            moved = None
            if linux.net_devices:
                from pyoci.linux import netdev

                moved = netdev.move_devices(linux.net_devices, init_pid)
            idmap = _idmapped_mounts(spec, init_pid, st.bundle, "user" in ns)
            sources = _bind_sources(spec, init_pid, st.bundle, ns)
            try:
                chan.send(ch.InitSetup(pid=init_pid, netdev=moved, idmap=list(idmap),
                                              sources=list(sources)),
                                 list(idmap.values()) + list(sources.values()))
            finally:
                for fd in list(idmap.values()) + list(sources.values()):
                    os.close(fd)
            if cgroup_join is not None:
                cgroup_join.finish(init_pid)      # the bootstrap's write paid the wait
                rs.cgroup_join = None
                _apply_resources(cg, linux.resources)
                if st_mod.FAULT:
                    st_mod.fault("create:init-cgroup")
                try:
                    chan.send(ch.Cgroup())
                except OSError:
                    pass                          # the init failed: its error comes next
                if st_mod.FAULT:
                    st_mod.fault("create:cgroup-sent")
        elif isinstance(msg, ch.Hooks):
            from pyoci.linux.hooks import run_hooks

            rs.hooks_ran = True
            if hooks.poststop:                    # delete --force runs them after a crash
                st.creating["hooks"] = True
                st_mod.save(st)
            run_hooks(hooks, "prestart", public)
            run_hooks(hooks, "createRuntime", public)
            if st_mod.FAULT:
                st_mod.fault("create:hooks")
            chan.send(ch.Ok())
        elif isinstance(msg, ch.Listener):
            # the init is set up and about to report ready: only now is the seccomp agent
            # contacted (its connection then brings it the listener fd, unless `start`
            # fails); the init keeps it for the filter's load
            from pyoci.linux import seccomp as seccomp_mod

            listener = seccomp_mod.connect_listener(linux.seccomp.listener_path)
            try:
                chan.send(ch.Ok(), [listener.fileno()])
            finally:
                listener.close()
        elif isinstance(msg, ch.Ready):
            _await_exec(chan)      # a seccomp filter may be loaded after "ready"
            if st_mod.FAULT:
                st_mod.fault("create:ready")
            break
        else:
            msg.close_fds()
            raise SysError(f"unexpected message {msg.tag!r} from container init")
    if cg is not None:
        st.cgroup = cg.to_state()
    st.namespaces = {t: f"/proc/{st.pid}/ns/{nsmod.PROC_NAME[t]}" for t in ns}
    if rs.host_mounts is not None:
        from pyoci.linux import mountinfo

        st.mounts = mountinfo.new_mounts(rs.rootfs, rs.host_mounts)
    st.creating = None
    st_mod.save(st)
    if st_mod.FAULT:
        st_mod.fault("create:saved")
    if opts.pid_file:
        write_pid_file(opts.pid_file, st.pid)


def _planned_cgroup(cg) -> dict:
    """The manager's state with the cgroup directories create() is about to make counted
    as made (those that do not exist yet): recorded before they are made, so that a killed
    create leaves nothing `delete --force` does not know of. The final state.json has the
    exact list."""
    d = cg.to_state()
    made = d.get("created")
    if isinstance(made, list):
        for leaf in cg.leaves():
            missing = []
            p = leaf
            while p not in ("/", "") and not os.path.isdir(p):
                missing.append(p)
                p = os.path.dirname(p)
            made.extend(m for m in reversed(missing) if m not in made)
    return d


def _apply_resources(cg, resources: dict | None) -> None:
    """linux.resources into the container's cgroups, only when pyoci made them: a cgroup
    that existed before (linux.cgroupsPath naming it) is joined as it is, its limits and
    device rules untouched; runc 1.1 warns when it holds processes, and so does pyoci."""
    if cg.found:
        from pyoci import log

        log.warning("container's cgroup is not empty: %d process(es) found", cg.found)
    if cg.owned():
        cg.apply(resources)
    elif resources:
        from pyoci import log

        log.warning("linux.resources: not applied: the container's cgroup %s existed "
                    "before it (pyoci changes no cgroup it did not create)",
                    next((d for d in cg.leaves() if d not in getattr(cg, "created", ())),
                         cg.leaves()[0] if cg.leaves() else "?"))


class _CgroupJoin:
    """The cgroup's creation and first cgroup.procs write in a thread: create() and
    add(bootstrap) start at once (and take the grace period); finish(init) waits for them
    and adds the init, which the bootstrap may have forked before it was moved."""

    def __init__(self, cg, bootstrap: int) -> None:
        import _thread

        self.cg = cg
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()
        _thread.start_new_thread(self._run, (bootstrap,))

    def _run(self, pid: int) -> None:
        try:
            self.cg.create()
            try:
                self.cg.add(pid)
            except BaseException:  # noqa: BLE001 - the bootstrap may have exited: ESRCH
                pass
            if st_mod.FAULT:
                st_mod.fault("create:cgroup")
        except BaseException as e:  # noqa: BLE001 - raised by finish()
            self.error = e
        finally:
            self.done.release()

    def wait(self) -> None:
        self.done.acquire()
        self.done.release()

    def finish(self, init_pid: int) -> None:
        self.wait()
        if self.error is not None:
            raise self.error
        self.cg.add(init_pid)


def _idmapped_mounts(spec: config.Spec, pid: int, bundle: str,
                     userns: bool) -> dict[int, int]:
    """With a user namespace, idmap/ridmap mounts are made here on the host side (the kernel
    refuses to id-map most filesystems from inside a user namespace) and sent to the init."""
    if not userns or not any(o in ("idmap", "ridmap") for m in spec.mounts for o in m.options):
        return {}
    from pyoci.linux import mounts

    nsfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return mounts.prepare_idmapped_mounts(spec, nsfd, bundle)
    finally:
        os.close(nsfd)


def _await_exec(chan) -> None:
    """The init's last word: EOF when it executed the waiter (the socket is close-on-exec)
    or closed it to wait itself, or an error (loading the seccomp filter after "ready").
    Once create returns, the init is what waits for `start`."""
    msg = chan.recv_or_eof()
    if msg is not None:
        msg.close_fds()
        raise SysError(f"unexpected message {msg.tag!r} from container init")


def _bind_sources(spec: config.Spec, pid: int, bundle: str, ns: dict) -> dict[int, int]:
    """In a user namespace of its own the init may not reach a bind source (a directory on
    the way only the host's root may search): they are opened here, as runc does (a
    rootless caller could not reach more than the init). Only in a new mount namespace:
    one joined by path may be shaped by processes that are not this container's, and
    nothing is resolved there with the host's credentials."""
    if os.geteuid() != 0 or "user" not in ns or "mount" not in ns or ns["mount"] or not any(
            m.type == "bind" or any(o in ("bind", "rbind") for o in m.options)
            for m in spec.mounts):
        return {}
    from pyoci.linux import mounts

    return mounts.open_bind_sources(spec, pid, bundle)


def abort_create(st: st_mod.State, spec: config.Spec, cg, rs: Rollback) -> None:
    """Undo a failed create: kill what was started, remove cgroup and state dir."""
    if rs.cgroup_join is not None:
        rs.cgroup_join.wait()          # no cgroup.procs write may race the rmdir
    for pid in (rs.bootstrap, rs.init):
        if pid:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
    if rs.bootstrap:
        try:
            os.waitpid(rs.bootstrap, 0)
        except ChildProcessError:
            pass
    if rs.init:
        st_mod.wait_dead(rs.init, 0, timeout=10)
    if rs.host_mounts is not None:
        from pyoci.linux import mountinfo

        mountinfo.unmount_recorded(mountinfo.new_mounts(rs.rootfs, rs.host_mounts))
    if cg is not None and rs.cgroup_made:
        try:
            cg.destroy()
        except Exception:
            pass
    if rs.hooks_ran:
        from pyoci.linux.hooks import run_hooks

        run_hooks(spec.hooks, "poststop", st_mod.public_state(st, "stopped"),
                  warn_only=True)
    if rs.dir_made:                       # not another container's directory (EEXIST)
        st_mod.rmtree(st.dir)
