"""`update [flags] ID` / `update --resources FILE|- ID`: merge the flags (or a LinuxResources
JSON document) into the container's current resources (zero or absent means unchanged, as
docker sends them), apply the merged set through the cgroup manager and store it in the
state directory (resources.json) for the next update. runc 1.1's flags, messages and exit
codes."""

import posix
import sys

from pyoci import jsonio, state
from pyoci.errors import ConfigError, PyociError, StateError, UnsupportedError, UsageError
from pyoci.cgstate import manager

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

RESOURCES_FILE = "resources.json"

# update flag names that take a value (--resources/-r reads LinuxResources JSON); the flag
# table is pyoci.cli's
VALUE_FLAGS = (
    "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period", "cpu-rt-runtime",
    "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation", "memory-swap",
    "kernel-memory", "kernel-memory-tcp", "pids-limit", "l3-cache-schema", "mem-bw-schema",
)

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
        from pyoci.units import ram_in_bytes   # only for the memory flags

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


def update_from_flags(opts: dict) -> "dict[str, dict[str, Any]]":
    """The resources the update flags set ({section: {key: value}}), zeros included."""
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, key, kind) in _FLAG_FIELDS.items():
        if flag in opts and (opts[flag] != "" or kind == "int"):
            out.setdefault(section, {})[key] = _parse_flag(flag, kind, opts[flag])
    return out


def update_from_json(data: bytes, source: str) -> "dict[str, dict[str, Any]]":
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


def merge_resources(current: dict | None, delta: "dict[str, dict[str, Any]]") -> dict:
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


def current_resources(st: state.State) -> dict:
    """The resources last applied: resources.json after an update, else the config's."""
    try:
        doc = jsonio.loads(state.read_file(f"{st.dir}/{RESOURCES_FILE}"))
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
        cfg = state.load_config(st)
    except (OSError, ValueError):
        return {}
    return ((cfg.get("linux") or {}).get("resources")) or {}


def _read_resources_arg(path: str) -> "dict[str, dict[str, Any]]":
    if path == "-":
        return update_from_json(sys.stdin.buffer.read(), "stdin")
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            data = state._read_fd(fd)
        finally:
            posix.close(fd)
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror.lower() if e.strerror else e}") from None
    return update_from_json(data, path)


def update(root: str, cid: str, opts: dict) -> None:
    for flag, (_s, _k, kind) in _FLAG_FIELDS.items():   # urfave/cli parses these first
        if kind == "int" and flag in opts:
            _parse_flag(flag, kind, opts[flag])
    st = state.load(root, cid)
    if opts.get("resources"):
        delta = _read_resources_arg(opts["resources"])
    else:
        delta = update_from_flags(opts)
    if opts.get("l3-cache-schema"):
        raise UnsupportedError("Intel RDT/CAT: l3 cache schema is not enabled")
    if opts.get("mem-bw-schema"):
        raise UnsupportedError("Intel RDT/MBA: memory bandwidth schema is not enabled")
    with state.Lock(st.dir):
        st = state.load(root, cid)       # as it is now: a racing delete may have removed it
        cg = manager(st, "update")
        if state.status(st) == "stopped":
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
        state.write_atomic(f"{st.dir}/{RESOURCES_FILE}", jsonio.dumps(new).encode())




def run(root: str, cid: str, opts: dict) -> int:
    update(root, cid, opts)
    return 0
