"""`pyoci exec`: run a new process inside an existing container (runc's `exec`).

The process is built from `--process FILE` (a runtime-spec `process` object) or from the
container's stored config with the command line's overrides, and validated like at create.
Then this process (on the host) builds the seccomp program (libseccomp is a host library),
opens the container init's namespace files and forks the joiner, which forks the process
(pyoci.joiner: the children). The joiner is put into the container's cgroup here, the
process's pid recorded, and the process let go; they talk over pyoci.linux.channel. A clean
execve closes the channel (close-on-exec): EOF here, and the process counts as started.
"""

from __future__ import annotations

import _signal   # not signal, socket, json: each costs milliseconds on every exec
import os
import sys

from pyoci import TYPE_CHECKING, jsonio
from pyoci import state as st_mod
from pyoci.errors import ConfigError, PyociError, StateError, SysError, UsageError
from pyoci.foreground import Forwarder, wait_exit
from pyoci.linux import channel as ch
from pyoci.linux import namespaces as nsmod
from pyoci.linux import sock as unix
from pyoci.linux import syscalls as sc
from pyoci.record import dataclass, field

if TYPE_CHECKING:
    from pyoci.spec import config


def run_command(cmd: str, root: str, global_opts: dict, opts: dict,
                positionals: list[str]) -> int:
    if not positionals:
        raise UsageError("exec: requires a container id (pyoci exec [options] ID [ARGS...])")
    cid, args = positionals[0], positionals[1:]
    from pyoci.linux import sealed

    sealed.reexec()         # done by the launcher already, unless that failed: say why
    preserve = _preserve_fds(opts.get("preserve_fds"))
    st = st_mod.load(root, cid)
    check_status(st, bool(opts.get("ignore_paused")))
    cfg = st_mod.load_config(st)
    proc = build_process(cfg, opts, args)
    check_process(proc, cfg, opts)
    return execute(st, cfg, proc, opts, preserve)


def _preserve_fds(value: str | None) -> int:
    try:
        n = int(value or 0)
        if n < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--preserve-fds: invalid value {value!r}") from None
    return n


def check_status(st: st_mod.State, ignore_paused: bool) -> None:
    status = st_mod.status(st)
    if status == "stopped":
        raise StateError("cannot exec in a stopped container")
    if status == "creating":
        raise StateError("cannot exec in a container that is being created")
    if status == "paused" and not ignore_paused:
        raise StateError("cannot exec in a paused container (use --ignore-paused to override)")


# --- building and checking the process ----------------------------------------------------

def build_process(cfg: dict, opts: dict, args: list[str]) -> dict:
    """The process to run: --process FILE, or the container's process with the overrides."""
    if opts.get("process"):
        # the process-building flags are ignored with --process, as runc does: podman
        # passes --tty along with --process (the file's "terminal" decides)
        if args:
            raise UsageError("exec: command arguments cannot be used with --process")
        return read_process_file(opts["process"])
    if not args:
        raise UsageError("exec: args cannot be empty (give a command or --process FILE)")
    proc = jsonio.loads(jsonio.dumps(cfg.get("process") or {}))   # a deep copy
    proc["args"] = list(args)
    proc["terminal"] = bool(opts.get("tty"))
    proc.pop("consoleSize", None)
    if opts.get("cwd"):
        proc["cwd"] = opts["cwd"]
    if opts.get("apparmor"):
        proc["apparmorProfile"] = opts["apparmor"]
    if opts.get("process_label"):
        proc["selinuxLabel"] = opts["process_label"]
    if "no_new_privs" in opts:
        proc["noNewPrivileges"] = bool(opts["no_new_privs"])
    proc["env"] = list(proc.get("env") or []) + list(opts.get("env") or [])
    if opts.get("cap"):
        _add_caps(proc, opts["cap"])
    user = dict(proc.get("user") or {})
    if opts.get("user"):
        user.update(parse_user(opts["user"]))
    gids = [parse_gid(g) for g in opts.get("additional_gids") or []]
    if gids:
        user["additionalGids"] = list(user.get("additionalGids") or []) + gids
    proc["user"] = user
    return proc


def _add_caps(proc: dict, names: list[str]) -> None:
    """--cap: add each capability to the bounding, effective and permitted sets, and to the
    ambient set only when the process has an inheritable set at all (runc since the fix of
    CVE-2022-29162: exec --cap never grants inheritable capabilities)."""
    from pyoci.linux import capabilities

    capabilities.parse(names, "--cap")
    caps = proc.get("capabilities")
    caps = {} if not isinstance(caps, dict) else caps
    sets = ["bounding", "effective", "permitted"]
    if caps.get("inheritable") is not None:
        sets.append("ambient")
    for s in sets:
        have = list(caps.get(s) or [])
        caps[s] = have + [n for n in names if n not in have]
    proc["capabilities"] = caps


def parse_user(value: str) -> dict:
    """--user UID[:GID] (numeric, as runc)."""
    uid, sep, gid = value.partition(":")
    out = {"uid": _uint32(uid, "--user", "uid")}
    if sep:
        out["gid"] = _uint32(gid, "--user", "gid")
    return out


def parse_gid(value: str) -> int:
    return _uint32(value, "--additional-gids", "gid")


def _uint32(value: str, flag: str, what: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise UsageError(f"{flag}: parsing {value!r} as int for {what} failed") from None
    if not 0 <= n < 1 << 32:
        raise UsageError(f"{flag}: {what} {n} is out of range")
    return n


def read_process_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = jsonio.loads(f.read())
    except OSError as e:
        raise ConfigError(f"--process {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--process {path}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--process {path}: must be a JSON object (a runtime-spec process)")
    from pyoci.spec import load as spec_load

    spec_load.clean_strings(doc, prefix="process.")
    return doc


def check_process(proc: dict, cfg: dict, opts: dict) -> None:
    """Refuse, before anything is started, what the process could not do: create's checks
    of a process (spec.load.check_process), then exec's own flags."""
    from pyoci.spec import load as spec_load

    spec_load.check_process(proc, cfg.get("linux") or {})
    tty = bool(proc.get("terminal"))
    if tty and opts.get("detach") and not opts.get("console_socket"):
        raise UsageError("exec: cannot allocate a tty when detached without --console-socket")
    if opts.get("console_socket") and not tty:
        raise UsageError("exec: --console-socket given but no tty is allocated (use --tty)")


# --- the caller's side ---------------------------------------------------------------------

def execute(st: st_mod.State, cfg: dict, process: dict, opts: dict, preserve: int) -> int:
    """Start the (checked) process in the container; detached: return 0 once it runs; else
    wait for it. cfg is the container's stored config."""
    from pyoci.spec import config

    proc = config.Process.parse(process)
    linux = config.parse(cfg).linux
    seccomp = linux.seccomp
    prog = None
    if seccomp is not None:
        from pyoci.linux import seccomp as seccomp_mod

        prog = seccomp_mod.build(seccomp)
    from pyoci.linux import process as procmod

    procmod.preload(proc)       # the children import nothing after setns(mount)
    pid_file = os.path.abspath(opts["pid_file"]) if opts.get("pid_file") else None
    sc.set_child_subreaper()      # the process is reparented to us when the joiner exits
    forward = Forwarder() if not opts.get("detach") else None
    res = _Held()
    try:
        master = _start(st, linux, proc, prog, opts, preserve, res)
    except BaseException as e:
        _abort(res)
        if forward:
            forward.restore()
        if isinstance(e, KeyboardInterrupt):
            raise PyociError("interrupted") from None
        raise
    finally:
        for s in res.socks:
            s.close()
        for fd in res.fds:
            os.close(fd)
    pid = res.pid
    if pid_file:
        st_mod.write_atomic(pid_file, str(pid).encode(), 0o644)
    if forward is None:
        return 0
    try:
        forward.to(pid)
        if master is not None:
            from pyoci.linux import terminal

            terminal.proxy(master, lambda: _alive(pid))
        return wait_exit(pid)
    finally:
        forward.restore()
        if master is not None:
            os.close(master)


@dataclass
class _Held:
    """What a failed exec must undo: sockets and fds to close, children to kill."""

    socks: list = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    joiner: int = 0
    pid: int = 0


def _start(st: st_mod.State, linux: config.Linux, proc: config.Process,
           prog: tuple[bytes, int] | None, opts: dict, preserve: int,
           res: _Held) -> int | None:
    """Fork the joiner, put it in the cgroup, let the process go; returns the pty master to
    proxy in the foreground (else None). Fills res with what to clean up."""
    from pyoci import joiner

    floor = 3 + preserve            # our fds must not land on a preserved fd number
    parent, theirs = ch.Channel.pair(
        "the joining process", "exec: the joining process exited during setup",
        "the runtime", "exec: setup aborted by the runtime")
    res.socks.append(parent)
    theirs.sock = _above(theirs.sock, floor, res)
    console_fd, console_parent = -1, None
    if proc.terminal:
        if opts.get("console_socket"):
            from pyoci.linux import terminal

            cs = terminal.connect_console_socket(opts["console_socket"])
            res.socks.append(cs)
            console_fd = _above(cs, floor, res).fileno()
        else:                       # foreground: the master comes to us, we proxy it
            console_parent, cs = unix.socketpair(unix.AF_UNIX, unix.SOCK_STREAM)
            res.socks += [console_parent, cs]
            console_fd = _above(cs, floor, res).fileno()
    seccomp = linux.seccomp
    ns_fds, root_fd = _open_namespaces(st, floor, res)
    job = joiner.JoinJob(process=proc, chan=theirs, personality=linux.personality,
                         ns=ns_fds, root_fd=root_fd, console_fd=console_fd, preserve=preserve,
                         seccomp=prog, notify=bool(seccomp is not None and prog
                                                   and seccomp.listener_path),
                         rootless=os.geteuid() != 0)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        joiner.joiner(job)          # never returns
        os._exit(1)
    res.joiner = pid
    if st_mod.FAULT:
        st_mod.fault("exec:forked")
    for _, fd in ns_fds:
        os.close(fd)
    res.fds = [fd for fd in res.fds if fd not in {f for _, f in ns_fds}]
    theirs.close()                  # EOF on parent once the process has executed
    cg = None
    if st.cgroup:
        # the cgroup driver (pyoci.cgroups.v1: ~0.5-1.7 ms to import) is loaded while the
        # joiner enters the container's namespaces, not after
        from pyoci import cgroups

        cg = cgroups.from_state(st.cgroup)
    parent.expect(ch.Join, 4).close_fds()
    if cg is not None:
        try:
            cg.add(pid)
        except PyociError:
            # the container stopped meanwhile and its cgroup went (delete racing): say so,
            # not which cgroup.procs write failed
            if not st_mod.init_alive(st):
                raise StateError("cannot exec in a stopped container") from None
            raise
    if st_mod.FAULT:
        st_mod.fault("exec:joined")
    parent.send(ch.Ok())
    forked = parent.expect(ch.Pid, 4)
    forked.close_fds()
    res.pid = forked.pid
    if cg is not None and not cg.owned():   # kill --all finds it by this record only
        record_process(st, res.pid)
    if st_mod.FAULT:
        st_mod.fault("exec:pid")
    os.waitpid(pid, 0)
    res.joiner = 0
    parent.send(ch.Go())
    if st_mod.FAULT:
        st_mod.fault("exec:go")
    while True:
        last = parent.recv_or_eof(4)
        if last is None:
            break
        fds = last.fds
        if isinstance(last, ch.Notify) and fds and seccomp is not None:
            from pyoci.linux import seccomp as seccomp_mod

            public = st_mod.public_state(st, "running")
            try:
                # the agent is contacted once there is a listener fd to give it: a failure
                # before never leaves it a connection without one
                listener = seccomp_mod.connect_listener(seccomp.listener_path)
                seccomp_mod.send_listener(listener, fds[0], public,
                                          seccomp.listener_metadata, pid=res.pid)
            finally:
                last.close_fds()
            parent.send(ch.Ok())
        else:
            last.close_fds()
            raise SysError(f"unexpected message {last.tag!r} from the process")
    if console_parent is not None:
        from pyoci.linux import terminal

        return terminal.recv_master(console_parent)
    return None


def record_process(st: st_mod.State, pid: int) -> None:
    """Note a process `exec` started in a container whose cgroup is not its own."""
    ps = st_mod.proc_stat(pid)
    if ps is None:
        return
    fd = os.open(os.path.join(st.dir, st_mod.PROCS_FILE),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{pid} {ps[1]}\n".encode())
    finally:
        os.close(fd)


def _above(s, floor: int, res: _Held):
    """s itself, or a close-on-exec duplicate numbered >= floor (s is then closed)."""
    if s.fileno() >= floor:
        return s
    import fcntl

    fd = fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, floor)
    dup = unix.socket(fileno=fd)
    res.socks.append(dup)
    s.close()
    return dup


def _open_namespaces(st: st_mod.State, floor: int,
                     res: _Held) -> tuple[list[tuple[str, int]], int]:
    """Open the init's namespaces that differ from ours, in join order (user first, mount
    last), and without a mount namespace of its own the init's root (the rootfs it chrooted
    to; -1 otherwise); then make sure the init is still the container's (not a reused PID)."""
    import fcntl

    paths: dict[str, str | None] = {}
    for t in st.namespaces:
        name = nsmod.PROC_NAME.get(t)
        if name is None:
            continue
        path = f"/proc/{st.pid}/ns/{name}"
        try:
            theirs, ours = os.stat(path), os.stat(f"/proc/self/ns/{name}")
        except FileNotFoundError:
            continue                # a namespace type this kernel lacks
        except OSError as e:
            raise SysError(f"exec: {t} namespace of the container: {e.strerror}") from None
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            paths[t] = path
    fds = nsmod.open_paths(paths)
    out = []
    for t, fd in fds:
        if fd < floor:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
            os.close(fd)
            fd = high
        res.fds.append(fd)
        out.append((t, fd))
    root = -1
    if "mount" not in st.namespaces:
        try:
            fd = os.open(f"/proc/{st.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SysError(f"exec: the container's root: {e.strerror}") from None
        root = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(fd)
        res.fds.append(root)
    if not st_mod.init_alive(st):
        raise StateError("cannot exec in a stopped container")
    return out, root


def _abort(res: _Held) -> None:
    """A failed exec leaves no process behind: kill the joiner and the process, reap them."""
    for pid in (res.joiner, res.pid):
        if pid:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in (res.joiner, res.pid):
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _alive(pid: int) -> bool:
    ps = st_mod.proc_stat(pid)
    return ps is not None and ps[0] not in ("Z", "X", "x")
