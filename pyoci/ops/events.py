"""`events [--stats] [--interval D] ID`: runc's JSON lines: one `stats` event with --stats,
otherwise a stats event every --interval and an `oom` event whenever the OOM kill count
grows, until the container stops."""

import posix
import sys

from pyoci import jsonio, state
from pyoci.errors import PyociError, StateError, UsageError
from pyoci.cgstate import manager
from pyoci.units import parse_duration

OOM_POLL_SECONDS = 0.2   # how often the stream looks at the OOM kill count between stats


def _emit(event: dict) -> None:
    sys.stdout.write(jsonio.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def events(root: str, cid: str, stats_once: bool, interval_s: str) -> int:
    try:
        interval = parse_duration(interval_s)
    except ValueError:
        raise UsageError(f'invalid value "{interval_s}" for flag -interval: parse error') \
            from None
    st = state.load(root, cid)
    if interval <= 0:
        raise UsageError("duration interval must be greater than 0")
    if state.status(st) == "stopped":
        raise StateError(f"container with id {cid} is not running")
    cg = manager(st, "events")
    if stats_once:
        try:
            data = cg.stats()
        except PyociError:
            # the container stopped meanwhile and its cgroup went (delete racing: a file
            # read as the cgroup is removed answers ENODEV): say so, not which read failed
            if not state.init_alive(st):
                raise StateError(f"container with id {cid} is not running") from None
            raise
        _emit({"type": "stats", "id": cid, "data": data})
        return 0
    try:
        _stream(st, cg, interval)
    except BrokenPipeError:
        return 0
    return 0


def _stream(st: state.State, cg, interval: float) -> None:
    """Stats every interval and oom events as they happen, until the init exits (its
    pidfd becomes readable) or the cgroup is gone."""
    import select
    import time

    from pyoci import log

    try:
        pidfd = posix.pidfd_open(st.pid)
    except OSError:
        return
    try:
        if not state.init_alive(st):
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        last_oom = _oom_count(cg)
        next_stats = time.monotonic() + interval
        while True:
            wait = min(max(next_stats - time.monotonic(), 0.0), OOM_POLL_SECONDS)
            exited = bool(poller.poll(wait * 1000))
            oom = _oom_count(cg)
            if oom > last_oom:
                _emit({"type": "oom", "id": st.id})
                last_oom = oom
            if exited:
                return
            if time.monotonic() >= next_stats:
                next_stats += interval
                try:
                    data = cg.stats()
                except PyociError as e:
                    log.line("error", "%s", e)
                    continue
                _emit({"type": "stats", "id": st.id, "data": data})
    finally:
        posix.close(pidfd)


def _oom_count(cg) -> int:
    try:
        return cg.oom_count()
    except PyociError:
        return 0




def run(root: str, cid: str, stats: bool, interval: str) -> int:
    return events(root, cid, stats, interval)
