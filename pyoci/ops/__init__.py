"""pause, resume, update, events and ps: the commands that act on a container through its
cgroup, with runc 1.1's flags, outputs, exit codes and error messages.

- pause/resume freeze and thaw the container's cgroup (runc pauses `created` containers too);
- update merges the flags (or a LinuxResources JSON from --resources FILE|-) into the
  container's current resources (zero or absent means unchanged, as docker sends them),
  applies the merged set through the cgroup manager and stores it in the state directory
  (resources.json) for the next update;
- events prints runc's JSON lines: one `stats` event with --stats, otherwise a stats event
  every --interval and an `oom` event whenever the OOM kill count grows, until the container
  stops;
- ps prints the container's host PIDs (--format json) or the host `ps` output (default -ef)
  filtered to the container's processes, header kept.
"""

from __future__ import annotations

import os
import sys

from pyoci import jsonio   # not json (re, enum...: milliseconds on every command)
from pyoci import state as st_mod
from pyoci.errors import ConfigError, PyociError, StateError, UnsupportedError, UsageError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

RESOURCES_FILE = "resources.json"

# update flag -> (key, takes value); --resources/-r reads LinuxResources JSON
_UPDATE_VALUE_FLAGS = (
    "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period", "cpu-rt-runtime",
    "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation", "memory-swap",
    "kernel-memory", "kernel-memory-tcp", "pids-limit", "l3-cache-schema", "mem-bw-schema",
)

COMMAND_FLAGS: dict[str, dict] = {
    "pause": {},
    "resume": {},
    "update": {"resources": ("resources", True), "r": ("resources", True),
               **{f: (f, True) for f in _UPDATE_VALUE_FLAGS}},
    "events": {"stats": ("stats", False), "interval": ("interval", True)},
    "ps": {"format": ("format", True), "f": ("format", True)},
}


def run_command(cmd: str, root: str, global_opts: dict, opts: dict,
                positionals: list[str]) -> int:
    if cmd == "ps":
        if not positionals:
            raise UsageError('"ps" requires a minimum of 1 argument(s)')
        return ps(root, positionals[0], opts.get("format", "table"), positionals[1:])
    if len(positionals) != 1:
        raise UsageError(f'"{cmd}" requires exactly 1 argument(s)')
    cid = positionals[0]
    if cmd == "pause":
        pause(root, cid)
    elif cmd == "resume":
        resume(root, cid)
    elif cmd == "update":
        update(root, cid, opts)
    elif cmd == "events":
        return events(root, cid, bool(opts.get("stats")), opts.get("interval", "5s"))
    else:
        raise UsageError(f"unknown command {cmd!r}")
    return 0


# --- shared -----------------------------------------------------------------------------

def _manager(st: st_mod.State, what: str):
    if not st.cgroup and getattr(st, "creating", None) is not None:
        # no state.json (yet or any more): a create under way, or a delete that raced us
        raise StateError(f"{what}: container {st.id} is being created or deleted")
    if not st.cgroup:
        raise UnsupportedError(f"{what}: container {st.id} has no cgroup (a rootless "
                               "container whose user could not create one: this needs "
                               "root or a delegated cgroup)")
    from pyoci import cgroups

    return cgroups.from_state(st.cgroup)


def _status(st: st_mod.State, cg) -> str:
    """The status as runc sees it: a frozen `created` container counts as paused."""
    s = st_mod.status(st)
    if s == "created" and cg.frozen():
        return "paused"
    return s


# --- pause / resume -------------------------------------------------------------------

def pause(root: str, cid: str) -> None:
    st = st_mod.load(root, cid)
    with st_mod.Lock(st.dir):
        cg = _manager(st, "pause")
        if _status(st, cg) not in ("running", "created"):
            raise StateError("container not running")
        cg.freeze()


def resume(root: str, cid: str) -> None:
    st = st_mod.load(root, cid)
    with st_mod.Lock(st.dir):
        cg = _manager(st, "resume")
        if _status(st, cg) != "paused":
            raise StateError("container not paused")
        cg.thaw()


# --- update ---------------------------------------------------------------------------

# the parts of linux.resources `update` changes (runc copies exactly these), with their types:
# "u" unsigned, "i" signed, "s" string, "b" boolean (checkBeforeUpdate: runc >= 1.2 reads it)
_UPDATE_FIELDS: dict[str, dict[str, str]] = {
    "memory": {"limit": "i", "reservation": "i", "swap": "i", "kernel": "i", "kernelTCP": "i",
               "checkBeforeUpdate": "b"},
    "cpu": {"shares": "u", "quota": "i", "period": "u", "realtimeRuntime": "i",
            "realtimePeriod": "u", "cpus": "s", "mems": "s", "idle": "i"},
    "blockIO": {"weight": "u"},
    "pids": {"limit": "i"},
}

# flag -> (section, key, parser)
_FLAG_FIELDS = {
    "blkio-weight": ("blockIO", "weight", "int"),
    "cpu-period": ("cpu", "period", "uint"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "uint"),
    "cpu-share": ("cpu", "shares", "uint"),
    "cpu-quota": ("cpu", "quota", "sint"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "sint"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "memory": ("memory", "limit", "mem"),
    "memory-swap": ("memory", "swap", "mem"),
    "kernel-memory": ("memory", "kernel", "mem"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "mem"),
    "memory-reservation": ("memory", "reservation", "mem"),
    "pids-limit": ("pids", "limit", "int"),
}

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)

# docker/go-units v0.4.0 RAMInBytes, as vendored by runc 1.1
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _size_parts(s: str) -> tuple[str, str] | None:
    """(number, unit letter or "") where s matches go-units' sizeRegex
    `^(\\d+(\\.\\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$` (Python's `$`: a final newline
    too), else None. Plain string checks: `re` costs milliseconds to import. The number is
    the longest run of digits and dots (nothing after it may be either), so no
    backtracking is needed."""
    body = s[:-1] if s.endswith("\n") else s
    i = 0
    while i < len(body) and (body[i] == "." or body[i].isdecimal()):
        i += 1
    number, tail = body[:i], body[i:]
    if not all(part.isdecimal() for part in number.split(".")):   # "", "1.", ".5", "1..2"
        return None
    tail = tail[1:] if tail[:1] == " " else tail
    unit = tail[0] if tail[:1] and tail[0] in "kKmMgGtTpP" else ""
    tail = tail[len(unit):]
    for allowed in ("iI", "bB"):
        if tail[:1] and tail[0] in allowed:
            tail = tail[1:]
    return (number, unit) if not tail else None


def ram_in_bytes(s: str) -> int:
    """A human size ("512m", "1.5 GiB", "100kb", "1024") in bytes, binary units, as
    docker/go-units' RAMInBytes; ValueError with its message otherwise."""
    parts = _size_parts(s)
    if parts is None:
        raise ValueError(f"invalid size: '{s}'")
    number, unit = parts
    try:
        size = float(number)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{number}": invalid syntax') \
            from None
    return int(size * _BINARY.get(unit.lower(), 1))


def _parse_flag(flag: str, kind: str, v: str) -> int | str:
    if kind == "str":
        return v
    if kind == "int":       # urfave/cli IntFlag (Go's flag package, base 0)
        try:
            n = int(v, 0)
        except ValueError:
            n = None
        if n is None or not _INT64[0] <= n <= _INT64[1]:
            raise UsageError(f'invalid value "{v}" for flag -{flag}: parse error')
        return n
    if kind == "mem":
        if v == "-1":
            return -1
        try:
            return ram_in_bytes(v)
        except ValueError as e:
            raise UsageError(f"invalid value for {flag}: {e}") from None
    # strconv.ParseUint / ParseInt, base 10
    fn = "ParseUint" if kind == "uint" else "ParseInt"
    digits = v[1:] if kind != "uint" and v[:1] in ("+", "-") else v
    ok = digits.isdecimal()     # re.fullmatch(r"\d+" or r"[+-]?\d+", v)
    if not ok:
        raise UsageError(f'invalid value for {flag}: strconv.{fn}: parsing "{v}": '
                         f"invalid syntax")
    n = int(v)
    lo, hi = _UINT64 if kind == "uint" else _INT64
    if not lo <= n <= hi:
        raise UsageError(f'invalid value for {flag}: strconv.{fn}: parsing "{v}": '
                         f"value out of range")
    return n


def update_from_flags(opts: dict) -> dict[str, dict[str, Any]]:
    """The resources the update flags set ({section: {key: value}}), zeros included."""
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, key, kind) in _FLAG_FIELDS.items():
        if flag in opts and (opts[flag] != "" or kind == "int"):
            out.setdefault(section, {})[key] = _parse_flag(flag, kind, opts[flag])
    return out


def update_from_json(data: bytes, source: str) -> dict[str, dict[str, Any]]:
    """The update-able parts of a LinuxResources JSON document (others are ignored, as runc
    ignores them); ConfigError naming the field for a wrong type."""
    try:
        doc = jsonio.loads(data or b"null")
    except ValueError as e:
        raise ConfigError(f"update: {source}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"update: {source}: must be a JSON object (LinuxResources)")
    out: dict[str, dict[str, Any]] = {}
    for section, fields in _UPDATE_FIELDS.items():
        sec = doc.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise ConfigError(f"linux.resources.{section}: must be an object")
        for key, kind in fields.items():
            v = sec.get(key)
            if v is None:
                continue
            f = f"linux.resources.{section}.{key}"
            if kind == "s":
                if not isinstance(v, str):
                    raise ConfigError(f"{f}: must be a string, not {v!r}")
            elif kind == "b":
                if not isinstance(v, bool):
                    raise ConfigError(f"{f}: must be a boolean, not {v!r}")
            else:
                lo, hi = _UINT64 if kind == "u" else _INT64
                if key == "weight":
                    hi = 65535
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    raise ConfigError(f"{f}: must be an integer in [{lo}, {hi}], not {v!r}")
            out.setdefault(section, {})[key] = v
    uni = doc.get("unified")
    if uni is not None:
        if not isinstance(uni, dict) or not all(isinstance(x, str) for x in uni.values()):
            raise ConfigError("linux.resources.unified: must be an object of strings")
        if uni:
            out["unified"] = dict(uni)
    return out


def merge_resources(current: dict | None, delta: dict[str, dict[str, Any]]) -> dict:
    """current linux.resources with the update's values laid over it: a zero or empty value
    leaves the current one unchanged (cpu.idle, where 0 is meaningful, and booleans always
    apply); unified keys are added/replaced one by one."""
    merged = _copy(current or {})
    for section, values in delta.items():
        sec = merged.get(section)
        if not isinstance(sec, dict):
            sec = merged[section] = {}
        for key, v in values.items():
            if v in (0, "") and not isinstance(v, bool) and \
                    not (section == "cpu" and key == "idle"):
                continue
            sec[key] = v
    return merged


def _copy(v):
    """copy.deepcopy of a JSON value (dicts, lists and immutable leaves)."""
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def applicable(resources: dict) -> dict:
    """The subset of resources that `update` writes to the cgroup (runc's update fields)."""
    out: dict[str, Any] = {}
    for section, fields in _UPDATE_FIELDS.items():
        sec = resources.get(section)
        if isinstance(sec, dict):
            part = {k: sec[k] for k in fields if sec.get(k) is not None
                    and k not in ("kernel", "kernelTCP")}
            if part:
                out[section] = part
    if resources.get("unified"):
        out["unified"] = resources["unified"]
    return out


def current_resources(st: st_mod.State) -> dict:
    """The resources last applied: resources.json after an update, else the config's."""
    try:
        doc = jsonio.loads(st_mod.read_file(os.path.join(st.dir, RESOURCES_FILE)))
        if not isinstance(doc, dict):
            raise ValueError
        return doc
    except FileNotFoundError:
        pass
    except OSError as e:
        raise PyociError(f"container {st.id}: cannot read {RESOURCES_FILE}: "
                         f"{e.strerror or e}") from None
    except (ValueError, RecursionError):
        raise PyociError(f"container {st.id}: corrupt {RESOURCES_FILE}") from None
    try:
        cfg = st_mod.load_config(st)
    except (OSError, ValueError):
        return {}
    return ((cfg.get("linux") or {}).get("resources")) or {}


def _read_resources_arg(path: str) -> dict[str, dict[str, Any]]:
    if path == "-":
        return update_from_json(sys.stdin.buffer.read(), "stdin")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror.lower() if e.strerror else e}") from None
    return update_from_json(data, path)


def update(root: str, cid: str, opts: dict) -> None:
    for flag, (_s, _k, kind) in _FLAG_FIELDS.items():   # urfave/cli parses these first
        if kind == "int" and flag in opts:
            _parse_flag(flag, kind, opts[flag])
    st = st_mod.load(root, cid)
    if opts.get("resources"):
        delta = _read_resources_arg(opts["resources"])
    else:
        delta = update_from_flags(opts)
    if opts.get("l3-cache-schema"):
        raise UnsupportedError("Intel RDT/CAT: l3 cache schema is not enabled")
    if opts.get("mem-bw-schema"):
        raise UnsupportedError("Intel RDT/MBA: memory bandwidth schema is not enabled")
    with st_mod.Lock(st.dir):
        st = st_mod.load(root, cid)       # as it is now: a racing delete may have removed it
        cg = _manager(st, "update")
        if st_mod.status(st) == "stopped":
            raise StateError("container not running")
        cg.mine("update")
        old = current_resources(st)
        new = merge_resources(old, delta)
        try:
            cg.apply(applicable(new))
        except PyociError:
            try:
                cg.apply(applicable(old))
            except PyociError as e2:
                from pyoci import log

                log.warning(
                    "setting back cgroup configs failed: %s; the cgroup and the stored "
                    "resources may differ", e2)
            raise
        st_mod.write_atomic(os.path.join(st.dir, RESOURCES_FILE), jsonio.dumps(new).encode())


# --- events ---------------------------------------------------------------------------

_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
# tried in this order: "ms" before "m" (the first unit that matches is taken)
_DUR_UNIT_ORDER = ("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h")

OOM_POLL_SECONDS = 0.2   # how often the stream looks at the OOM kill count between stats


def parse_duration(s: str) -> float:
    """A Go time.Duration string ("5s", "1m30s", "250ms", "0") in seconds; ValueError."""
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(s)
    total, pos = 0.0, 0
    while pos < len(body):
        number, pos = _dur_number(body, pos)
        unit = next((u for u in _DUR_UNIT_ORDER if body.startswith(u, pos)), None)
        if not number or unit is None:
            raise ValueError(s)
        total += float(number) * _DUR_UNITS[unit]
        pos += len(unit)
    return -total if s.startswith("-") else total


def _dur_number(body: str, pos: int) -> tuple[str, int]:
    """The match of `\\d+\\.?\\d*|\\.\\d+` at pos ("" if none) and where it ends. Greedy
    is exact: a unit never starts with a digit or a dot, so a shorter number never helps."""
    def digits(i: int) -> int:
        while i < len(body) and body[i].isdecimal():
            i += 1
        return i

    end = digits(pos)
    if end > pos:                           # \d+ \.? \d*
        if body[end:end + 1] == ".":
            end = digits(end + 1)
    elif body[pos:pos + 1] == ".":          # \. \d+
        end = digits(pos + 1)
        if end == pos + 1:
            end = pos
    return body[pos:end], end


def _emit(event: dict) -> None:
    sys.stdout.write(jsonio.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def events(root: str, cid: str, stats_once: bool, interval_s: str) -> int:
    try:
        interval = parse_duration(interval_s)
    except ValueError:
        raise UsageError(f'invalid value "{interval_s}" for flag -interval: parse error') \
            from None
    st = st_mod.load(root, cid)
    if interval <= 0:
        raise UsageError("duration interval must be greater than 0")
    if st_mod.status(st) == "stopped":
        raise StateError(f"container with id {cid} is not running")
    cg = _manager(st, "events")
    if stats_once:
        try:
            data = cg.stats()
        except PyociError:
            # the container stopped meanwhile and its cgroup went (delete racing: a file
            # read as the cgroup is removed answers ENODEV): say so, not which read failed
            if not st_mod.init_alive(st):
                raise StateError(f"container with id {cid} is not running") from None
            raise
        _emit({"type": "stats", "id": cid, "data": data})
        return 0
    try:
        _stream(st, cg, interval)
    except BrokenPipeError:
        return 0
    return 0


def _stream(st: st_mod.State, cg, interval: float) -> None:
    """Stats every interval and oom events as they happen, until the init exits (its
    pidfd becomes readable) or the cgroup is gone."""
    import select
    import time

    from pyoci import log

    try:
        pidfd = os.pidfd_open(st.pid)
    except OSError:
        return
    try:
        if not st_mod.init_alive(st):
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
        os.close(pidfd)


def _oom_count(cg) -> int:
    try:
        return cg.oom_count()
    except PyociError:
        return 0


# --- ps -------------------------------------------------------------------------------

def container_pids(st: st_mod.State) -> list[int]:
    if not st.cgroup:
        return []
    cg = _manager(st, "ps")
    if cg.owned():
        return cg.pids()
    from pyoci import container   # a cgroup it shares: only the container's own processes

    return [pid for pid, _start in container.own_processes(st)]


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> int:
    st = st_mod.load(root, cid)
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

    r, w = os.pipe()                # both close-on-exec; the dup2s below are not
    try:
        try:
            pid = os.posix_spawnp("ps", ["ps", *args], os.environ, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)],
                setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
        except OSError as e:
            raise PyociError(f"ps: {e.strerror}") from None
        os.close(w)
        w = -1
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)
