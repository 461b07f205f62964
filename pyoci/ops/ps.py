"""`ps [--format table|json] ID [ps options]`: the container's host PIDs (json), or the host
`ps` output (default -ef) filtered to the container's processes, header kept."""

import posix
import sys

from pyoci import jsonio, state
from pyoci.errors import PyociError, UsageError
from pyoci.ops.pause import manager


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
    code, output), on posix_spawnp (subprocess costs milliseconds to import). SIGPIPE and
    SIGXFSZ go back to their defaults in the child, as subprocess's restore_signals."""
    import _signal

    r, w = posix.pipe()                # both close-on-exec; the dup2s below are not
    try:
        try:
            pid = posix.posix_spawnp("ps", ["ps", *args], posix.environ, file_actions=[
                (posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
                (posix.POSIX_SPAWN_DUP2, w, 1), (posix.POSIX_SPAWN_DUP2, w, 2)],
                setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
        except OSError as e:
            raise PyociError(f"ps: {e.strerror}") from None
        posix.close(w)
        w = -1
        chunks = []
        while True:
            b = posix.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        posix.close(r)
        if w >= 0:
            posix.close(w)
    _, status = posix.waitpid(pid, 0)
    return posix.waitstatus_to_exitcode(status), b"".join(chunks)


def run(root: str, cid: str, fmt: str, ps_args: list[str]) -> int:
    return ps(root, cid, fmt, ps_args)
