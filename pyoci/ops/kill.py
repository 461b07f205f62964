"""`kill [--all] ID [SIGNAL]`: signal the container's init through a pidfd (after checking it
is still the recorded process), or with --all every process of the container: its whole
cgroup when pyoci created it, else only the container's own processes. Built-in modules
only unless --all."""

import _signal
import posix

from pyoci import state


def parse_signal(s: str | None) -> int:
    """A signal number ("9"), name ("KILL", "sigkill", "SIGRTMIN+3") or "" (SIGTERM); the
    names are signal.Signals', read from _signal (the enum is slow to import)."""
    if s is None or s == "":
        return _signal.SIGTERM
    if s.isdigit():
        n = int(s)
        if 0 < n < _signal.NSIG:
            return n
        from pyoci.errors import PyociError

        raise PyociError(f"invalid signal: {s}")
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    num = getattr(_signal, name, None) if name.isupper() and not name.startswith("SIG_") \
        else None
    if type(num) is int:
        return num
    if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
        return _rt_signal(name)
    from pyoci.errors import PyociError

    raise PyociError(f"unknown signal: {s}")


def _rt_signal(name: str) -> int:
    base = _signal.SIGRTMIN if name.startswith("SIGRTMIN") else _signal.SIGRTMAX
    rest = name[8:]
    try:
        off = int(rest) if rest else 0
    except ValueError:
        from pyoci.errors import PyociError

        raise PyociError(f"unknown signal: {name}") from None
    n = base + off
    if not _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
        from pyoci.errors import PyociError

        raise PyociError(f"unknown signal: {name}")
    return n


def kill(root: str, cid: str, sig: int, all_: bool = False) -> None:
    st = state.load(root, cid)
    if state.stopped(st):
        if not all_:
            from pyoci.errors import StateError

            raise StateError("container not running")
        if st.cgroup:
            _kill_leftovers(st, sig)
        return
    if all_ and st.cgroup:
        from pyoci import cgroups

        cg = cgroups.from_state(st.cgroup)
        if cg.owned():
            cg.kill_all(sig)
        else:
            signal_own(st, sig)
        return
    signal_init(st, sig)


def _kill_leftovers(st: state.State, sig: int) -> None:
    """`kill --all` of a stopped container, as runc's: its init is gone, but without a PID
    namespace of its own its other processes may still be in its cgroup (a pod's shared
    PID namespace), and they are signalled; in a cgroup pyoci did not create only the
    container's own processes are (signal_own)."""
    from pyoci import cgroups

    assert st.cgroup is not None
    cg = cgroups.from_state(st.cgroup)
    if not cg.owned():
        signal_own(st, sig)
        return
    try:
        left = cg.pids()
    except OSError:
        return                            # its cgroup is gone: nothing is left
    if left:
        cg.kill_all(sig)


def signal_init(st: state.State, sig: int) -> None:
    """Signal the init through a pidfd, after checking it is still the same process."""
    try:
        pidfd = posix.pidfd_open(st.pid)
    except OSError:
        from pyoci.errors import StateError

        raise StateError("container not running") from None
    try:
        if not state.init_alive(st):
            from pyoci.errors import StateError

            raise StateError("container not running")
        _signal.pidfd_send_signal(pidfd, sig)
    except OSError as e:
        from pyoci.errors import SysError

        raise SysError(f"kill: {e.strerror}") from None
    finally:
        posix.close(pidfd)


def signal_recorded(rec: list, sig: int) -> None:
    """Signal a process recorded as [pid, start time], if it is still that process."""
    try:
        pidfd = posix.pidfd_open(rec[0])
    except (OSError, TypeError):
        return
    try:
        ps = state.proc_stat(rec[0])
        if ps is not None and ps[1] == rec[1]:
            _signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass
    finally:
        posix.close(pidfd)


def signal_own(st: state.State, sig: int) -> None:
    """`kill --all` of a container whose cgroup is not its own: only its processes."""
    for pid, start in own_processes(st):
        signal_recorded([pid, start], sig)


def own_processes(st: state.State) -> list[tuple[int, int]]:
    """(pid, start time) of the container's processes when its cgroup is not its own
    (linux.cgroupsPath named a cgroup that existed, other processes may be in it): with a
    PID namespace of its own, every process in that namespace; without one, the init, the
    processes `exec` started (recorded in the state directory) and their descendants."""
    table = _proc_table()
    if _own_pid_ns(st):
        if not state.init_alive(st):
            return []                     # the namespace died with its init
        try:
            ns = posix.stat(f"/proc/{st.pid}/ns/pid")
        except OSError:
            return []
        out = []
        for pid, (_ppid, start) in table.items():
            try:
                s = posix.stat(f"/proc/{pid}/ns/pid")
            except OSError:
                continue
            if (s.st_ino, s.st_dev) == (ns.st_ino, ns.st_dev):
                out.append((pid, start))
        return out
    roots = [(st.pid, st.start_time)] + recorded_processes(st)
    mine = {pid for pid, start in roots if table.get(pid, (0, -1))[1] == start}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(mine)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    return [(pid, table[pid][1]) for pid in sorted(mine)]


def _own_pid_ns(st: state.State) -> bool:
    """The container has a new PID namespace (not one joined by path)."""
    try:
        cfg = state.load_config(st)
    except (OSError, ValueError):
        return False
    for ns in (cfg.get("linux") or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "pid":
            return not ns.get("path")
    return False


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process."""
    out = {}
    for name in posix.listdir("/proc"):
        if not name.isdigit():
            continue
        rest = state.stat_fields(int(name))
        if rest is None or rest[0] in (b"Z", b"X", b"x"):
            continue
        out[int(name)] = (int(rest[1]), int(rest[19]))
    return out


def recorded_processes(st: state.State) -> list[tuple[int, int]]:
    """(pid, start time) of the processes `exec` started, recorded when the container's
    cgroup is not its own (state.PROCS_FILE)."""
    try:
        lines = state.read_file(f"{st.dir}/{state.PROCS_FILE}").decode().split("\n")
    except (OSError, UnicodeError):
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out.append((int(parts[0]), int(parts[1])))
    return out


def run(root: str, cid: str, sig: str | None, all_: bool) -> int:
    kill(root, cid, parse_signal(sig), all_)
    return 0
