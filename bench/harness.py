"""Benchmark harness: OCI runtimes (pyoci, runc, crun) side by side on one busybox bundle.

Stdlib only (plus tests/support/rootfs.py for the bundle). `bench/run` is the command line;
this module holds the pieces so tests and `bench/profile` can reuse them.

Every timed command is started with os.posix_spawn and reaped with os.wait4 (which also gives
its peak RSS), timed with time.perf_counter_ns. Runtimes are interleaved: each iteration runs
every runtime once, alternating their order, so machine noise hits all of them alike. The
harness is a child subreaper, reaps orphaned container inits, and removes every container,
state root and bundle it made, also on failure, SIGINT or SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Callable

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
if os.path.join(REPO, "tests") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "tests"))
from support.procs import reap_zombies  # noqa: E402
from support.procs import set_subreaper as set_subreaper  # noqa: E402 - bench/run calls it here

HYBRID_NOTE = ("refused on this host (hybrid cgroups); run inside the full-kernel lane "
               "(lane/run) for crun numbers")
SLEEP_ARGS = ["sleep", "3600"]
TRUE_ARGS = ["/bin/true"]


class BenchError(Exception):
    """A runtime command failed or timed out; the message is one line."""


class CommandTimeout(BenchError):
    pass


# --- processes ----------------------------------------------------------------------------

def _on_alarm(signum, frame):
    raise CommandTimeout("timed out")


def _arm(seconds: float) -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


_NULL_FD = -1


def runtime_env() -> dict[str, str]:
    """The environment runtimes run with: ours without PYTHON* variables, which would change
    a Python runtime's start-up (PYTHONDONTWRITEBYTECODE makes it recompile every module on
    every call; a deployed runtime has its bytecode cached)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


ENV = runtime_env()


def _null_fd() -> int:
    global _NULL_FD
    if _NULL_FD < 0:
        _NULL_FD = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _NULL_FD


def _err_file() -> int:
    """An anonymous file for a command's stderr (a pipe could fill, or be held open by a
    container init that inherits it)."""
    try:
        return os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        fd, path = tempfile.mkstemp(prefix="pyoci-bench-err-")
        os.unlink(path)
        return fd


@dataclass
class Result:
    """One finished command: exit code, wall time, its peak RSS (ru_maxrss, KiB), stderr."""
    rc: int
    ns: int
    maxrss_kb: int
    err: str = ""


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _spawn(argv: list[str], err_fd: int) -> int:
    null = _null_fd()
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
               (os.POSIX_SPAWN_DUP2, err_fd, 2)]
    return os.posix_spawn(argv[0], argv, ENV, file_actions=actions, setpgroup=0)


def _finish_child(pid: int, grace: float) -> None:
    """Reap a spawned command that was interrupted: let it finish for up to `grace` seconds
    (so it does not leave a half-made container), then SIGKILL its process group."""
    if pid <= 0:
        return
    if grace > 0:
        try:
            _arm(grace)
            try:
                os.waitpid(pid, 0)
                return
            finally:
                _disarm()
        except ChildProcessError:
            return
        except CommandTimeout:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run_timed(argv: list[str], timeout: float = 60.0) -> Result:
    """Run argv (absolute path) with stdin/stdout on /dev/null; time it and get its rusage."""
    err_fd = _err_file()
    pid = 0
    try:
        _arm(timeout)
        try:
            t0 = time.perf_counter_ns()
            pid = _spawn(argv, err_fd)
            _, status, ru = os.wait4(pid, 0)
            t1 = time.perf_counter_ns()
            pid = 0
        except CommandTimeout:
            _finish_child(pid, 0)
            pid = 0
            raise
        finally:
            _disarm()
            if pid:
                _finish_child(pid, 30.0)
        err = os.pread(err_fd, 8192, 0).decode(errors="replace")
    except CommandTimeout:
        raise CommandTimeout(f"{os.path.basename(argv[0])} {' '.join(argv[3:4])}: timed out "
                             f"after {timeout:g}s") from None
    finally:
        os.close(err_fd)
    return Result(os.waitstatus_to_exitcode(status), t1 - t0, ru.ru_maxrss, _first_line(err))


def run_parallel(argvs: list[list[str]], timeout: float = 120.0) -> tuple[int, list[Result]]:
    """Start every argv at once; returns (wall ns until the last exited, per-command results
    with latency from its own spawn to its exit). Orphans reaped meanwhile are ignored."""
    err_fds = [_err_file() for _ in argvs]
    pids: dict[int, int] = {}
    starts: list[int] = [0] * len(argvs)
    done: dict[int, Result] = {}
    try:
        _arm(timeout)
        try:
            t0 = time.perf_counter_ns()
            for i, argv in enumerate(argvs):
                starts[i] = time.perf_counter_ns()
                pids[_spawn(argv, err_fds[i])] = i
            while len(done) < len(argvs):
                pid, status, ru = os.wait4(-1, 0)
                t = time.perf_counter_ns()
                i = pids.pop(pid, None)
                if i is None:
                    continue              # an orphaned container init
                done[i] = Result(os.waitstatus_to_exitcode(status), t - starts[i],
                                 ru.ru_maxrss)
            wall = time.perf_counter_ns() - t0
        except CommandTimeout:
            for pid in list(pids):
                _finish_child(pid, 0)
            pids.clear()
            raise
        finally:
            _disarm()
            for pid in list(pids):
                _finish_child(pid, 30.0)
        for i, r in done.items():
            r.err = _first_line(os.pread(err_fds[i], 8192, 0).decode(errors="replace"))
    except CommandTimeout:
        raise CommandTimeout(f"parallel run: timed out after {timeout:g}s") from None
    finally:
        for fd in err_fds:
            os.close(fd)
    return wall, [done[i] for i in range(len(argvs))]


def proc_state(pid: int) -> str | None:
    """The one-letter state of pid from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:][:1].decode()


def wait_exit(pid: int, timeout: float = 30.0) -> None:
    """Wait until pid (a container init, normally reparented to this subreaper) has exited,
    reaping it when it is our child."""
    _arm(timeout)
    try:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            pass
        while proc_state(pid) not in (None, "Z", "X"):
            time.sleep(0.0005)
    except CommandTimeout:
        raise CommandTimeout(f"container init {pid} did not exit within {timeout:g}s") from None
    finally:
        _disarm()


def proc_memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (KiB) of pid from /proc/PID/status, Pss from smaps_rollup if readable."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS"):
                    out[k] = int(v.split()[0])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


# --- runtimes -----------------------------------------------------------------------------

@dataclass
class Runtime:
    """One runtime binary with a private state root."""
    name: str
    binary: str
    root: str = ""
    version: str = ""
    available: bool = True
    note: str = ""
    timeout: float = 60.0

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def timed(self, *args: str) -> Result:
        return run_timed(self.argv(*args), self.timeout)

    def must(self, *args: str) -> Result:
        r = self.timed(*args)
        if r.rc != 0:
            raise BenchError(f"{self.name} {args[0]} exited {r.rc}: {r.err or '(no stderr)'}")
        return r

    def quiet(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL, env=ENV,
                              capture_output=True, text=True, timeout=timeout)


def resolve_runtime(spec: str) -> tuple[str, str]:
    """'pyoci', 'runc', 'crun' or a path -> (name, absolute binary path)."""
    if os.sep in spec:
        path = os.path.abspath(spec)
    elif spec == "pyoci" and os.path.exists(os.path.join(REPO, ".venv", "bin", "pyoci")):
        path = os.path.join(REPO, ".venv", "bin", "pyoci")
    else:
        path = shutil.which(spec) or ""
    return os.path.basename(spec), path


def runtime_version(binary: str) -> str:
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL, env=ENV)
    except OSError as e:
        return f"unknown ({e.strerror})"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def floor_interpreter() -> str:
    """The interpreter pyoci's venv runs on (.venv/bin/python resolved), else this one."""
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return os.path.realpath(venv) if os.path.exists(venv) else os.path.realpath(sys.executable)


# --- the work area ------------------------------------------------------------------------

@dataclass
class Work:
    """Everything the harness creates on disk: one temp directory, removed at the end."""
    dir: str
    bundles: dict[str, str] = field(default_factory=dict)
    runtimes: list[Runtime] = field(default_factory=list)
    seq: int = 0
    oci_version: str = ""

    def new_id(self, rt: Runtime) -> str:
        """A container id unique to this harness run that names the runtime using it."""
        self.seq += 1
        name = "".join(c for c in rt.name if c.isalnum()) or "rt"
        return f"{id_prefix()}{name}-{self.seq}"

    def pid_file(self, cid: str) -> str:
        return os.path.join(self.dir, f"{cid}.pid")


def id_prefix() -> str:
    return f"bench{os.getpid()}-"


def make_work(parent: str | None) -> Work:
    return Work(tempfile.mkdtemp(prefix="pyoci-bench-", dir=parent))


def write_bundles(work: Work, oci_version: str | None = None) -> None:
    """A busybox rootfs shared (copied) into a /bin/true bundle and a sleep bundle."""
    from support.rootfs import base_config, build_rootfs, make_bundle

    cache = build_rootfs(os.path.join(work.dir, "rootfs-cache"))
    for name, args in (("true", TRUE_ARGS), ("sleep", SLEEP_ARGS)):
        cfg = base_config(args)
        if oci_version:
            cfg["ociVersion"] = oci_version
        work.bundles[name] = make_bundle(os.path.join(work.dir, f"bundle-{name}"), config=cfg,
                                         rootfs_cache=cache)
    work.oci_version = oci_version or base_config()["ociVersion"]


def add_runtime(work: Work, name: str, binary: str, timeout: float) -> Runtime:
    root = os.path.join(work.dir, f"root-{name}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    rt = Runtime(name=name, binary=binary, root=root, timeout=timeout)
    work.runtimes.append(rt)
    return rt


def children() -> list[int]:
    """PIDs of this process's live children: what it spawned, and (as a subreaper) every
    orphaned descendant, such as container inits."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()
        if int(rest[1]) == me and rest[0] not in (b"Z", b"X"):
            out.append(int(d))
    return out


def kill_children(timeout: float = 10.0) -> None:
    """SIGKILL (by PID) every live child until none is left (orphans of killed ones are
    reparented here), reaping as we go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_zombies()
        kids = children()
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def cgroup_mounts() -> list[str]:
    """Mount points of the cgroup (v1) and cgroup2 hierarchies."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] and right.split()[0] in ("cgroup", "cgroup2"):
                out.append(left.split()[4].replace("\\040", " "))
    return out


def leftover_cgroups(prefix: str, depth: int = 6) -> list[str]:
    """Cgroup directories named after our container ids (prefix...), deepest first."""
    found: list[str] = []

    def walk(d: str, level: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if e.name.startswith(prefix):
                found.append(e.path)
            if level < depth:
                walk(e.path, level + 1)
    for m in cgroup_mounts():
        walk(m, 1)
    return sorted(set(found), key=lambda p: -p.count(os.sep))


def remove_cgroups(paths: list[str]) -> None:
    for p in paths:
        try:
            os.rmdir(p)
        except OSError:
            pass


def cleanup(work: Work) -> list[str]:
    """SIGKILL (by PID) every process left among our children (the subreaper gets every
    orphaned container process), reap, force-delete every container in every state root
    and remove the work directory. Returns the cgroup directories a runtime left behind
    (named after our container ids; they are removed too)."""
    kill_children()
    _delete_all(work)
    kill_children()
    shutil.rmtree(work.dir, ignore_errors=True)
    leaked = leftover_cgroups(id_prefix())
    remove_cgroups(leaked)
    return leaked


def _delete_all(work: Work) -> None:
    for rt in work.runtimes:
        if not os.path.isdir(rt.root):
            continue
        for cid in sorted(os.listdir(rt.root)):
            try:
                rt.quiet("delete", "--force", cid, timeout=10.0)
            except (OSError, subprocess.SubprocessError):
                pass
        reap_zombies()


# --- one container in a given state -------------------------------------------------------

def create(work: Work, rt: Runtime, bundle: str) -> tuple[str, int, Result]:
    """Create a container (untimed use); returns (id, init pid, result)."""
    cid = work.new_id(rt)
    pf = work.pid_file(cid)
    r = rt.must("create", "--bundle", work.bundles[bundle], "--pid-file", pf, cid)
    pid = read_pid(pf)
    return cid, pid, r


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def finish(work: Work, rt: Runtime, cid: str, pid: int) -> None:
    """Untimed teardown: delete --force, wait the init out, forget it."""
    rt.quiet("delete", "--force", cid)
    if pid:
        wait_exit(pid)
    try:
        os.unlink(work.pid_file(cid))
    except FileNotFoundError:
        pass


def leftover(work: Work, rt: Runtime, cid: str) -> None:
    if os.path.exists(os.path.join(rt.root, cid)):
        rt.quiet("delete", "--force", cid, timeout=10.0)


# --- the measurements ---------------------------------------------------------------------
# Each takes (work, runtime) and returns one sample: {"ms": float, ...extra numbers}.

def _ms(ns: int) -> float:
    return ns / 1e6


def m_run(work: Work, rt: Runtime) -> dict:
    cid = work.new_id(rt)
    r = rt.must("run", "--bundle", work.bundles["true"], cid)
    leftover(work, rt, cid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}


def m_create(work: Work, rt: Runtime) -> dict:
    cid, pid, r = create(work, rt, "true")
    mem = proc_memory(pid)
    finish(work, rt, cid, pid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb,
            **{f"init_{k}_kb": v for k, v in mem.items()}}


def m_start(work: Work, rt: Runtime) -> dict:
    cid, pid, _ = create(work, rt, "true")
    try:
        r = rt.must("start", cid)
        wait_exit(pid)
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}


def m_state(work: Work, rt: Runtime) -> dict:
    cid, pid, _ = create(work, rt, "true")
    try:
        r = rt.must("state", cid)
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}


def m_kill(work: Work, rt: Runtime) -> dict:
    cid, pid, _ = create(work, rt, "sleep")
    try:
        rt.must("start", cid)
        r = rt.must("kill", cid, "KILL")
        wait_exit(pid)
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}


def m_delete(work: Work, rt: Runtime) -> dict:
    cid, pid, _ = create(work, rt, "true")
    try:
        rt.must("start", cid)
        wait_exit(pid)
        r = rt.must("delete", cid)
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}


def m_cycle(work: Work, rt: Runtime) -> dict:
    """create -> start -> wait for the init -> delete, all timed."""
    cid = work.new_id(rt)
    pf = work.pid_file(cid)
    pid = 0
    try:
        t0 = time.perf_counter_ns()
        rt.must("create", "--bundle", work.bundles["true"], "--pid-file", pf, cid)
        pid = read_pid(pf)
        rt.must("start", cid)
        wait_exit(pid)
        rt.must("delete", cid)
        t1 = time.perf_counter_ns()
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(t1 - t0)}


def m_shim(work: Work, rt: Runtime) -> dict:
    """create -> start -> delete --force of a running container, as podman/containerd do."""
    cid = work.new_id(rt)
    pf = work.pid_file(cid)
    pid = 0
    try:
        t0 = time.perf_counter_ns()
        rt.must("create", "--bundle", work.bundles["sleep"], "--pid-file", pf, cid)
        pid = read_pid(pf)
        rt.must("start", cid)
        rt.must("delete", "--force", cid)
        t1 = time.perf_counter_ns()
    finally:
        finish(work, rt, cid, pid)
    return {"ms": _ms(t1 - t0)}


def m_floor(interp: str) -> Callable[[], dict]:
    argv = [interp, "-I", "-S", "-c", "pass"]

    def one() -> dict:
        r = run_timed(argv)
        if r.rc != 0:
            raise BenchError(f"{interp} -I -S -c pass exited {r.rc}: {r.err}")
        return {"ms": _ms(r.ns), "maxrss_kb": r.maxrss_kb}
    return one


def sequence(work: Work, rt: Runtime, n: int) -> dict:
    """n `run`s of /bin/true one after another; total time."""
    per = []
    t0 = time.perf_counter_ns()
    for _ in range(n):
        cid = work.new_id(rt)
        r = rt.must("run", "--bundle", work.bundles["true"], cid)
        per.append(_ms(r.ns))
    t1 = time.perf_counter_ns()
    for cid in os.listdir(rt.root):
        rt.quiet("delete", "--force", cid)
    return {"ms": _ms(t1 - t0), "per_run_median_ms": median(per)}


def parallel(work: Work, rt: Runtime, n: int) -> tuple[float, list[float]]:
    """n `run`s of /bin/true at once; (containers per second, latencies in ms)."""
    ids = [work.new_id(rt) for _ in range(n)]
    try:
        wall, results = run_parallel(
            [rt.argv("run", "--bundle", work.bundles["true"], cid) for cid in ids],
            timeout=max(120.0, rt.timeout * 2))
    finally:
        for cid in ids:
            leftover(work, rt, cid)
    bad = [r for r in results if r.rc != 0]
    if bad:
        raise BenchError(f"{rt.name} run (parallel) exited {bad[0].rc}: {bad[0].err}")
    return n / (wall / 1e9), [_ms(r.ns) for r in results]


GNU_TIME = "/usr/bin/time"


def peak_rss(rt: Runtime, work: Work, *args: str) -> int:
    """Peak RSS (KiB) of one runtime command, from GNU time's %M (wait4's ru_maxrss).
    Not from our own wait4: after a spawn from this (large) Python process the kernel carries
    the parent's RSS into the child's maxrss across exec, which would floor every value."""
    out = os.path.join(work.dir, "time.out")
    r = run_timed([GNU_TIME, "-o", out, "-f", "%M", *rt.argv(*args)], rt.timeout)
    if r.rc != 0:
        raise BenchError(f"{rt.name} {args[0]} exited {r.rc}: {r.err or '(no stderr)'}")
    with open(out) as f:
        return int(f.read().split()[-1])


def m_rss(work: Work, rt: Runtime) -> dict:
    """Peak RSS of `run`, `create` and `state` (untimed runs of their own)."""
    cid = work.new_id(rt)
    run = peak_rss(rt, work, "run", "--bundle", work.bundles["true"], cid)
    leftover(work, rt, cid)
    cid = work.new_id(rt)
    pf = work.pid_file(cid)
    pid = 0
    try:
        create = peak_rss(rt, work, "create", "--bundle", work.bundles["true"], "--pid-file",
                          pf, cid)
        pid = read_pid(pf)
        state = peak_rss(rt, work, "state", cid)
    finally:
        finish(work, rt, cid, pid)
    return {"run_kb": run, "create_kb": create, "state_kb": state}


def exec_probe(work: Work, rt: Runtime) -> tuple[str, int, str]:
    """Start a sleep container and try `exec ID /bin/true`; returns (id, pid, error or '')."""
    cid, pid, _ = create(work, rt, "sleep")
    rt.must("start", cid)
    r = rt.timed("exec", cid, "/bin/true")
    return cid, pid, ("" if r.rc == 0 else r.err or f"exit {r.rc}")


# --- statistics ---------------------------------------------------------------------------

def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    if not s:
        return math.nan
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def summarize(xs: list[float]) -> dict:
    return {"n": len(xs), "median": median(xs), "p90": percentile(xs, 90),
            "p99": percentile(xs, 99), "min": min(xs), "max": max(xs),
            "mean": sum(xs) / len(xs)}


# --- probing ------------------------------------------------------------------------------

def probe(work: Work, rt: Runtime) -> str:
    """Try `run` of /bin/true; returns '' if it works, else the one-line reason."""
    cid = work.new_id(rt)
    try:
        r = run_timed(rt.argv("run", "--bundle", work.bundles["true"], cid),
                      min(rt.timeout, 30.0))
    except BenchError as e:
        kill_children()               # only probes run now: what is left is this one's
        return str(e)
    finally:
        try:
            leftover(work, rt, cid)
        except (OSError, subprocess.SubprocessError):
            pass
        reap_zombies()
    return "" if r.rc == 0 else (r.err or f"exit {r.rc}")


def probe_note(name: str, reason: str) -> str:
    if name == "crun" and "hybrid" in reason:
        return HYBRID_NOTE
    return f"probe failed: {reason}"


# --- machine ------------------------------------------------------------------------------

def machine_info() -> dict:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "memory_mib": mem_kb // 1024,
            "kernel": platform.release(), "machine": platform.machine(),
            "loadavg_start": list(os.getloadavg())}


def dump_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, allow_nan=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
