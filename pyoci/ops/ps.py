"""`ps [--format table|json] ID [ps options]`: the container's host PIDs (json), or the host
`ps` output (default -ef) filtered to the container's processes, header kept."""

import posix
import sys

from pyoci import jsonio, state
from pyoci.errors import PyociError, UsageError
from pyoci.cgstate import manager


def container_pids(st: state.State) -> list[int]:
    if not st.cgroup:
        return []
    cg = manager(st, "ps")
    if cg.owned():
        return cg.pids()
    from pyoci.ops.kill import own_processes   # a cgroup it shares: the container's own

    return [pid for pid, _start in own_processes(st)]


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> int:
    st = state.load(root, cid)
    pids = container_pids(st)
    if fmt == "json":
        sys.stdout.write((jsonio.dumps(pids, separators=(",", ":")) if pids else "null") + "\n")
        return 0
    if fmt != "table":
        raise UsageError("invalid format option")
    returncode, data = _run_ps(ps_args or ["-ef"])
    out = data.decode(errors="replace")
    if returncode != 0:
        raise PyociError(f"ps exit status {returncode}: {' '.join(out.split())}")
    lines = out.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise PyociError("couldn't find PID field in ps output")
    idx = titles.index("PID")
    want = set(pids)
    keep = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        try:
            pid = int(fields[idx])
        except (IndexError, ValueError):
            raise PyociError(f"unable to parse pid: {line.strip()!r}") from None
        if pid in want:
            keep.append(line)
    sys.stdout.write("\n".join(keep) + "\n")
    return 0


def _run_ps(args: list[str]) -> tuple[int, bytes]:
    """subprocess.run(["ps", *args], stdin=DEVNULL, stdout=PIPE, stderr=STDOUT): (exit
    code, output), through pyoci.linux.spawn (subprocess costs milliseconds to import).
    SIGPIPE and SIGXFSZ go back to their defaults in the child, as subprocess's
    restore_signals; ps is looked up on $PATH (unset: /bin:/usr/bin, as execvp)."""
    import _signal

    from pyoci.linux import spawn

    path = spawn.find("ps", _env_path())
    if path is None:
        raise PyociError("ps: No such file or directory")
    try:
        return spawn.output(path, ["ps", *args], stdin_null=True,
                            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    except OSError as e:
        raise PyociError(f"ps: {e.strerror}") from None


def _env_path() -> str:
    v = posix.environ.get(b"PATH")
    return "/bin:/usr/bin" if v is None else v.decode(sys.getfilesystemencoding(),
                                                       "surrogateescape")


def run(root: str, cid: str, fmt: str, ps_args: list[str]) -> int:
    return ps(root, cid, fmt, ps_args)
