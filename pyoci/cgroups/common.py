"""Small helpers shared by the cgroupfs drivers: reading and writing cgroup files with
one-line errors, filesystem magic numbers, value checks for `linux.resources`, and runc's
default device rules. No state; cheap to import."""

from __future__ import annotations

import errno
import os
import time

from pyoci.errors import ConfigError, SysError

CGROUP2_SUPER_MAGIC = 0x63677270

# runc's built-in allowed device rules (libcontainer/specconv AllowedDevices), appended
# after the config's own rules: mknod of anything, the standard character devices, the
# pty master and slaves, and tun/tap.
DEFAULT_DEVICE_RULES: tuple[dict, ...] = (
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},    # null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},    # random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},    # full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},    # tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},    # zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},    # urandom
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},              # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},    # ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # tun/tap
)


def fs_magic(path: str) -> int:
    """statfs(2) f_type of the filesystem holding path (0 when path does not exist)."""
    from pyoci.linux import cdata as ctypes   # ctypes' types, on _ctypes alone
    from pyoci.linux.syscalls import libc   # the one shared handle

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        if e in (errno.ENOENT, errno.ENOTDIR):
            return 0
        raise SysError(f"statfs {path}: {os.strerror(e)}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def read_file(d: str, name: str) -> str:
    """Contents of cgroup file d/name, stripped; SysError when it cannot be read."""
    p = os.path.join(d, name)
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError as e:
        raise SysError(f"read {p}: {e.strerror}") from None


def read_opt(d: str, name: str) -> str | None:
    """Like read_file, but None when the file does not exist (controller/kernel lacks it)."""
    try:
        with open(os.path.join(d, name)) as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise SysError(f"read {os.path.join(d, name)}: {e.strerror}") from None


def read_int(d: str, name: str, default: int = 0) -> int:
    """Integer in d/name ("max" reads as 0, as runc reports unlimited); default if absent."""
    s = read_opt(d, name)
    if s is None or s == "" or s == "max":
        return default
    try:
        return int(s.split()[0])
    except ValueError:
        return default


def read_keyed(d: str, name: str) -> dict[str, int]:
    """A flat keyed file ("key value" per line) as a dict; {} if absent."""
    out: dict[str, int] = {}
    for line in (read_opt(d, name) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def try_write(d: str, name: str, value: str | int) -> int:
    """Write value to cgroup file d/name; 0 on success, else the errno."""
    try:
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        return e.errno or errno.EIO
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        return e.errno or errno.EIO
    finally:
        os.close(fd)
    return 0


def write_file(d: str, name: str, value: str | int, field: str = "") -> None:
    """Write value to cgroup file d/name. The error names the config field when given."""
    e = try_write(d, name, value)
    if e:
        raise write_error(d, name, value, e, field)


def write_error(d: str, name: str, value: object, err: int, field: str = "") -> SysError:
    what = f"{field}: " if field else ""
    e = SysError(f"{what}write {str(value)!r} to {os.path.join(d, name)}: "
                 f"{os.strerror(err)}")
    e.errno = err                     # rootless create tells a denied write (EACCES...) apart
    return e


def read_procs(d: str) -> list[int]:
    """PIDs in d/cgroup.procs (empty if the cgroup is gone)."""
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise SysError(f"read {d}/cgroup.procs: {e.strerror}") from None


def read_procs_recursive(d: str) -> list[int]:
    """PIDs in d and every cgroup below it, in walk order, without duplicates."""
    seen: dict[int, None] = {}
    for root, _dirs, _files in os.walk(d):
        for pid in read_procs(root):
            seen.setdefault(pid, None)
    return list(seen)


def mkdir_p(path: str, created: list[str]) -> None:
    """mkdir -p path, appending each directory this call created (outermost first)."""
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for m in reversed(missing):
        try:
            os.mkdir(m, 0o755)
        except FileExistsError:
            continue
        except OSError as e:
            err = SysError(f"create cgroup {m}: {e.strerror}")
            err.errno = e.errno           # rootless create tells EACCES/EPERM/EROFS apart
            raise err from None
        created.append(m)


def rmdir_tree(path: str, retries: int = 8) -> None:
    """Remove cgroup directory path and any cgroups below it, deepest first, retrying
    while tasks drain (EBUSY). Missing directories are fine."""
    if not os.path.isdir(path):
        return
    subdirs = [os.path.join(root, d) for root, dirs, _ in os.walk(path) for d in dirs]
    for d in sorted(subdirs, key=lambda s: s.count("/"), reverse=True) + [path]:
        rmdir_retry(d, retries)


def rmdir_retry(path: str, retries: int = 8) -> None:
    delay = 0.01
    for attempt in range(retries):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EAGAIN) or attempt == retries - 1:
                raise SysError(f"remove cgroup {path}: {e.strerror}") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def rmdir_parent(path: str) -> bool:
    """Remove a parent cgroup a manager made (other containers may share it): False when it
    is busy (EBUSY, ENOTEMPTY) and stays; a missing one is fine."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise SysError(f"remove cgroup {path}: {e.strerror}") from None
        return False
    return True


def signal_each(pids: list[int], sig: int) -> None:
    """kill(pid, sig) for each pid; one that has exited meanwhile is skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def parse_ranges(s: str) -> list[tuple[int, int]]:
    """A CPU or memory-node list as inclusive ranges, "0-2,4" -> [(0, 2), (4, 4)]
    (cpuset.cpus, AllowedCPUs...); empty items are skipped, ValueError on a malformed item.
    A backward range ("3-1") is returned as it is: for the caller to refuse or skip."""
    out: list[tuple[int, int]] = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a = int(lo)
        out.append((a, int(hi) if sep else a))
    return out


def is_within(path: str, top: str) -> bool:
    """path is top or below it (both normalised absolute paths)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


# --- validation helpers for linux.resources ---------------------------------------------

def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def want_int(field: str, v: object, lo: int | None = None, hi: int | None = None) -> int:
    """v as an int within [lo, hi]; ConfigError naming field otherwise."""
    if not is_int(v):
        raise ConfigError(f"{field}: must be an integer, not {v!r}")
    assert isinstance(v, int)
    if lo is not None and v < lo:
        raise ConfigError(f"{field}: {v} is below the minimum {lo}")
    if hi is not None and v > hi:
        raise ConfigError(f"{field}: {v} is above the maximum {hi}")
    return v


def want_bool(field: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{field}: must be a boolean, not {v!r}")
    return v


def want_dict(field: str, v: object) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{field}: must be an object, not {type(v).__name__}")
    return v


def want_list(field: str, v: object) -> list:
    if not isinstance(v, list):
        raise ConfigError(f"{field}: must be an array, not {type(v).__name__}")
    return v


def _re_end(s: str) -> str:
    """s without the final newline that `$` of the `re` module matches before."""
    return s[:-1] if s.endswith("\n") else s


def _cpulist_ok(v: str) -> bool:
    r"""re.match(r"^\s*(\d+(-\d+)?)(\s*,\s*\d+(-\d+)?)*\s*$", v), without `re` (slow
    to import): \s is str.isspace, \d str.isdecimal."""
    for item in v.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdecimal() or (dash and not last.isdecimal()):
            return False
    return True


def unified_key_ok(k: str) -> bool:
    r"""re.match(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_.\-]+$", k): a cgroup2 file name such as
    "memory.max" for linux.resources.unified."""
    if k in _MOVES_PROCESSES:
        return False
    head, dot, tail = _re_end(k).partition(".")
    return (dot != "" and head[:1] in _LOWER and _KEY_HEAD.issuperset(head)
            and tail != "" and _KEY_TAIL.issuperset(tail))


# writing these would move any process (the host's init: found by the fuzz of update
# --resources) into the container's cgroup: never a resource
_MOVES_PROCESSES = frozenset(("cgroup.procs", "cgroup.threads"))
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_KEY_HEAD = _LOWER | frozenset("0123456789_")
_KEY_TAIL = _KEY_HEAD | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ.-")


def want_cpulist(field: str, v: object) -> str:
    """A cpuset list like "0-3,5" (empty means inherit)."""
    if not isinstance(v, str):
        raise ConfigError(f"{field}: must be a string, not {v!r}")
    if v.strip() and not _cpulist_ok(v):
        raise ConfigError(f"{field}: invalid list {v!r}")
    for part in v.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if int(a) > int(b):
                raise ConfigError(f"{field}: invalid range {part.strip()!r}")
    return v


def _pagesize_ok(v: str) -> bool:
    r"""re.match(r"^(\d+)(KB|MB|GB|TB|PB)$", v)."""
    v = _re_end(v)
    return v[-2:] in ("KB", "MB", "GB", "TB", "PB") and v[:-2].isdecimal()


def hugepage_sizes() -> list[str]:
    """Huge page sizes this kernel supports, in runc's naming ("2MB", "1GB")."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return []
    out = []
    for n in sorted(names, key=lambda s: int("".join(c for c in s if c.isdecimal()) or 0)):
        kb = _re_end(n)[len("hugepages-"):-len("kB")]      # hugepages-<\d+>kB
        if n.startswith("hugepages-") and _re_end(n).endswith("kB") and kb.isdecimal():
            out.append(pagesize_name(int(kb) * 1024))
    return out


def pagesize_name(size: int) -> str:
    """Bytes to runc's hugetlb page size name: 2097152 -> "2MB"."""
    units = ["B", "KB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1024 and size % 1024 == 0 and i < len(units) - 1:
        size //= 1024
        i += 1
    return f"{size}{units[i]}"


def want_pagesize(field: str, v: object) -> str:
    if not isinstance(v, str) or not _pagesize_ok(v):
        raise ConfigError(f"{field}: invalid huge page size {v!r}")
    sizes = hugepage_sizes()
    if v not in sizes:
        raise ConfigError(f"{field}: huge page size {v} is not supported by this kernel "
                          f"(supported: {', '.join(sizes) or 'none'})")
    return v


def want_hugepage_limits(field: str, v: object) -> None:
    """linux.resources.hugepageLimits: objects with a page size this kernel has and a
    limit >= 0."""
    for i, h in enumerate(want_list(field, v)):
        f = f"{field}[{i}]"
        want_dict(f, h)
        want_pagesize(f"{f}.pageSize", h.get("pageSize"))
        want_int(f"{f}.limit", h.get("limit"), 0)


def check_device_rules(rules: object, field: str = "linux.resources.devices") -> list[dict]:
    """Validate linux.resources.devices entries (allow, type, major, minor, access)."""
    out = []
    for i, r in enumerate(want_list(field, rules)):
        f = f"{field}[{i}]"
        want_dict(f, r)
        if "allow" not in r:
            raise ConfigError(f"{f}.allow: is required")
        want_bool(f"{f}.allow", r["allow"])
        t = r.get("type", "a")
        if t not in ("a", "b", "c"):
            raise ConfigError(f"{f}.type: must be one of a, b, c, not {t!r}")
        for k in ("major", "minor"):
            if r.get(k) is not None and r[k] != -1:
                want_int(f"{f}.{k}", r[k], 0)
        acc = r.get("access", "rwm")
        if not isinstance(acc, str) or not set(acc) <= set("rwm"):
            raise ConfigError(f"{f}.access: must be a combination of r, w and m, not {acc!r}")
        out.append(r)
    return out


def device_rule_string(r: dict) -> str:
    """A device rule in the cgroup v1 devices.allow/deny syntax: "c 1:3 rwm"."""
    t = r.get("type", "a")
    major = r.get("major")
    minor = r.get("minor")
    ma = "*" if major is None or major == -1 else str(major)
    mi = "*" if minor is None or minor == -1 else str(minor)
    acc = "".join(c for c in "rwm" if c in r.get("access", "rwm")) or "rwm"
    return f"{t} {ma}:{mi} {acc}"
