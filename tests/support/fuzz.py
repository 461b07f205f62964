"""Property-based fuzzing of pyoci's inputs (issue 11 §5): hostile values, structurally
plausible mutations of valid documents, and the checks every case must pass.

Every case runs the real `pyoci` binary and must end with exit 0 or a one-line error on
stderr that names what is wrong (never "internal error", never a traceback), within a time
limit (no hang), and leave nothing behind: no state directory, cgroup, mount, process or fd.

Sizes: each test's quick size (CI) is multiplied by PYOCI_FUZZ_SCALE (default 1);
`scripts/fuzz.sh` runs the large size (scale 42: 10,500 cases).

Safety on a shared host: the generators never produce a value that would make even a correct
runtime act on the host (a namespace path of a host process, a real host interface in
netDevices, a hook running a shell, a bundle or --root outside the test's directory, a state
file naming a host cgroup or process). Values whose handling is another part of issue 11 and
not yet on main are listed in KNOWN (see tests/test_fuzz.py).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import time
from collections.abc import Iterable

from hypothesis import strategies as st

from support.harness import PYOCI, Hang, Result, Runtime, reap_zombies, short_argv

SCALE = float(os.environ.get("PYOCI_FUZZ_SCALE", "1") or "1")
TIMEOUT = float(os.environ.get("PYOCI_FUZZ_TIMEOUT", "60"))


def examples(quick: int) -> int:
    return max(1, int(quick * SCALE))


# --- hostile values ---------------------------------------------------------------------------

BOUNDARY_INTS = [0, -1, 1, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1, 2**32, 2**53 + 1,
                 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, 10**30, -10**30, 65535,
                 65536, 1000, 1001, -1000, -1001, 4096, 1024]
ODD_STRINGS = [
    "", " ", "/", "//", ".", "..", "../../..", "/../../..", "/proc/self/exe", "/proc/1/root",
    "/dev/null", "/dev/sda", "/sys/fs/cgroup", "\x00", "a\x00b", "/x\x00y", "\ud800", "\udfff",
    "a\ud800b", "\n", "a\nb", "\t", "é", "\u202e", "\ufeff", "😀", "%s%n%x", "${HOME}", "$(id)",
    "-", "--help", "A=", "=", "A=\x00", "=A", "\\", "'", '"', "*", "?", "[", "{}", "[]",
    "null", "true", "0", "-1", "0x10", "1e9", "NaN", "/dev/console", "/dev/ptmx",
    "/proc/sysrq-trigger",
    "/proc/sys/kernel/core_pattern", "/etc/passwd", "rootfs", "./rootfs", "rootfs/../rootfs",
    "/tmp", "tmpfs", "bind", "rbind", "ro", "nosuid,nodev", "private", "rshared", "slave",
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "overlay", "none",
    "SIGKILL", "KILL", "9", "CAP_SYS_ADMIN", "CAP_NOPE", "RLIMIT_NOFILE", "RLIMIT_BOGUS",
    "user", "mount", "pid", "network", "ipc", "uts", "cgroup", "time", "bogus",
]
LONG_LENGTHS = [255, 256, 4095, 4096, 4097, 30000, 65536, 70000]


def long_string() -> st.SearchStrategy:
    return st.builds(lambda c, n: c * n, st.sampled_from(["a", "/", "é", "/a", "\x00", "."]),
                     st.sampled_from(LONG_LENGTHS))


def odd_text() -> st.SearchStrategy:
    """Short text including lone surrogates, NULs, control and non-ASCII characters."""
    return st.text(st.one_of(st.characters(), st.characters(categories=["Cs"]),
                             st.sampled_from("\x00/.=:,\n")), max_size=24)


class Deep:
    """A placeholder for nesting deeper than Python's json can write (dumps() expands it)."""

    def __init__(self, depth: int, kind: str):
        self.depth, self.kind = depth, kind

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind!r})"


def deep() -> st.SearchStrategy:
    return st.builds(Deep, st.sampled_from([50, 999, 1000, 5000, 20000]),
                     st.sampled_from(["list", "dict"]))


def scalars() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from([None, True, False, 0.5, -0.0, 1e308, 1.5e-300]),
        st.sampled_from(BOUNDARY_INTS), st.integers(), st.sampled_from(ODD_STRINGS),
        odd_text(), long_string())


def hostile_values() -> st.SearchStrategy:
    return st.one_of(
        scalars(), scalars(), deep(),
        st.lists(scalars(), max_size=4),
        st.dictionaries(st.sampled_from(ODD_STRINGS[:30]) | odd_text(), scalars(), max_size=3),
        st.just([]), st.just({}))


def dumps(doc) -> str:
    """JSON text of doc, Deep placeholders expanded (no recursion), surrogates kept as
    \\udXXX escapes (what a hostile client can write)."""
    deeps: list[Deep] = []

    def default(o):
        if isinstance(o, Deep):
            deeps.append(o)
            return f"@@DEEP{len(deeps) - 1}@@"
        raise TypeError(type(o).__name__)

    text = json.dumps(doc, default=default)
    for i, d in enumerate(deeps):
        if d.kind == "list":
            nested = "[" * d.depth + "1" + "]" * d.depth
        else:
            nested = '{"a":' * d.depth + "1" + "}" * d.depth
        text = text.replace(f'"@@DEEP{i}@@"', nested)
    return text


# --- mutations of a valid document ------------------------------------------------------------

def json_paths(doc, prefix=()) -> list[tuple]:
    """Every path (tuple of keys and indices) to a node below doc."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(json_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out.extend(json_paths(v, prefix + (i,)))
    return out


def get_at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def _blocked(path: tuple, blocked) -> bool:
    return any(path[:len(b)] == b for b in blocked)


@st.composite
def mutate(draw, base: dict, extra_keys: list[str], blocked=(), plausible=None,
           max_ops: int = 4) -> dict:
    """base with 1..max_ops mutations: a value replaced by a hostile one, a key removed, a
    key added (a known field name or an odd one), a list element added, or a structurally
    plausible piece (plausible: a strategy of (path, value) inserts) laid in. Paths under
    `blocked` are never touched by the generic mutations."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "append",
                                   "plausible", "plausible"]))
        paths = [p for p in json_paths(doc) if not _blocked(p, blocked)]
        if op == "plausible" and plausible is not None:
            path, value = draw(plausible)
            parent: dict | list = doc
            for p in path[:-1]:
                if isinstance(parent, dict):
                    nxt = parent.get(p)
                    if not isinstance(nxt, (dict, list)):
                        nxt = parent[p] = {} if not isinstance(p, int) else []
                    parent = nxt
                else:
                    break
            else:
                last = path[-1]
                if isinstance(parent, dict):
                    parent[last] = value
                elif isinstance(parent, list):
                    parent.append(value)
            continue
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = get_at(doc, path[:-1])
        key = path[-1]
        if op == "replace":
            parent[key] = draw(hostile_values())
        elif op == "delete":
            del parent[key]
        elif op == "add":
            target = get_at(doc, path)
            if isinstance(target, dict):
                target[draw(st.sampled_from(extra_keys) | odd_text())] = draw(hostile_values())
            else:
                parent[key] = draw(hostile_values())
        elif op == "append":
            target = get_at(doc, path)
            if isinstance(target, list):
                elem = copy.deepcopy(target[0]) if target and draw(st.booleans()) \
                    else draw(hostile_values())
                if isinstance(elem, dict) and elem:
                    elem[draw(st.sampled_from(sorted(elem)))] = draw(hostile_values())
                target.append(elem)
            else:
                parent[key] = draw(hostile_values())
    return doc


# --- plausible pieces of a config -------------------------------------------------------------

def hostile_path() -> st.SearchStrategy:
    return st.one_of(st.sampled_from([
        "/", "//", "/..", "/../../etc", "/proc", "/proc/self", "/proc/bus", "/proc/sys",
        "/proc/sysrq-trigger", "/sys", "/sys/fs/cgroup", "/dev", "/dev/null", "/dev/console",
        "/dev/pts/ptmx", "/etc/passwd", "/tmp", "/tmp/x", "/a/b/c/d", "relative", "./x", "../x",
        "/bin/busybox", "/bin/sh", "/x\x00y", "\ud800", "", " ", "/a\nb", "/a b", "/.",
        "/proc/self/fd/0", "/proc/1/ns/net", "/dev/shm", "/run", "/mnt/x/../../..",
    ]), long_string().map(lambda s: "/" + s), odd_text().map(lambda s: "/" + s))


def mount_entry() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"destination": hostile_path()},
        optional={
            "type": st.sampled_from(["bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue",
                                     "cgroup", "cgroup2", "none", "", "overlay", "bogusfs",
                                     "\x00"]) | odd_text(),
            "source": hostile_path() | st.sampled_from(["tmpfs", "proc", "none", "rootfs",
                                                        "rootfs/etc", "rootfs/../rootfs"]),
            "options": st.lists(st.sampled_from([
                "bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private", "rprivate",
                "shared", "rshared", "slave", "rslave", "unbindable", "size=1k", "size=-1",
                "mode=0777", "mode=99999", "uid=2147483648", "idmap", "ridmap", "recursive",
                "rro", "rnoexec", "nosymfollow", "relatime", "strictatime", "tmpcopyup",
                "x-bogus", "", "=", "bogus", "\x00"]) | odd_text(), max_size=5),
            "uidMappings": st.just([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        })


def hook_entry() -> st.SearchStrategy:
    # never a shell or anything that acts: /bin/true, /bin/false, missing, odd paths
    return st.fixed_dictionaries(
        {"path": st.sampled_from(["/bin/true", "/bin/false", "", "relative/hook", "/nonexistent",
                                  "/tmp", "/dev/null", "/x\x00y", "\ud800", "/proc/self/exe/x"])
         | long_string().map(lambda s: "/" + s)},
        optional={"args": st.lists(scalars(), max_size=3),
                  "env": st.lists(st.sampled_from(["A=1", "", "=", "A=\x00", "\ud800=1"])
                                  | odd_text(), max_size=3),
                  "timeout": st.sampled_from([0, -1, 1, 2**31, 2**63, 1.5, "1", None])})


def namespace_entry() -> st.SearchStrategy:
    # no path of a host process: a correct runtime would then join the host's namespaces
    return st.fixed_dictionaries(
        {"type": st.sampled_from(["pid", "network", "mount", "ipc", "uts", "user", "cgroup",
                                  "time", "bogus", "", "\x00"])},
        optional={"path": st.sampled_from(["/nonexistent/ns", "/dev/null", "/tmp", "", "rel/ns",
                                           "/x\x00y", "\ud800", "/proc/self/ns/bogus"])})


def device_entry() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"path": hostile_path(), "type": st.sampled_from(["c", "b", "u", "p", "x", "", "cc"])},
        optional={"major": st.sampled_from(BOUNDARY_INTS), "minor": st.sampled_from(BOUNDARY_INTS),
                  "fileMode": st.sampled_from([0, 0o666, 0o7777, 0o170000, -1, 2**32]),
                  "uid": st.sampled_from(BOUNDARY_INTS), "gid": st.sampled_from(BOUNDARY_INTS)})


def rlimit_entry() -> st.SearchStrategy:
    return st.fixed_dictionaries({
        "type": st.sampled_from(["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_AS",
                                 "RLIMIT_STACK", "RLIMIT_BOGUS", "", "rlimit_nofile"]),
        "hard": st.sampled_from(BOUNDARY_INTS), "soft": st.sampled_from(BOUNDARY_INTS)})


def resources_doc() -> st.SearchStrategy:
    n = st.sampled_from(BOUNDARY_INTS) | st.integers()
    return st.fixed_dictionaries({}, optional={
        "memory": st.fixed_dictionaries({}, optional={
            "limit": n, "reservation": n, "swap": n, "kernel": n, "kernelTCP": n,
            "swappiness": n, "disableOOMKiller": st.booleans(), "useHierarchy": st.booleans(),
            "checkBeforeUpdate": st.booleans()}),
        "cpu": st.fixed_dictionaries({}, optional={
            "shares": n, "quota": n, "period": n, "burst": n, "realtimeRuntime": n,
            "realtimePeriod": n, "idle": n,
            "cpus": st.sampled_from(["0", "0-1", "0-99", "", "x", "1,0", "-1", "0-", "\x00"]),
            "mems": st.sampled_from(["0", "1", "", "0-9", "x"])}),
        "pids": st.fixed_dictionaries({}, optional={"limit": n}),
        "blockIO": st.fixed_dictionaries({}, optional={
            "weight": n, "leafWeight": n,
            "weightDevice": st.lists(st.fixed_dictionaries(
                {"major": n, "minor": n}, optional={"weight": n}), max_size=2),
            "throttleReadBpsDevice": st.lists(st.fixed_dictionaries(
                {"major": n, "minor": n, "rate": n}), max_size=2)}),
        "hugepageLimits": st.lists(st.fixed_dictionaries({
            "pageSize": st.sampled_from(["2MB", "1GB", "", "3KB", "x"]), "limit": n}),
            max_size=2),
        "devices": st.lists(st.fixed_dictionaries(
            {"allow": st.booleans()},
            optional={"type": st.sampled_from(["a", "c", "b", "x", ""]), "major": n, "minor": n,
                      "access": st.sampled_from(["rwm", "r", "", "x", "rwmrwm"])}), max_size=3),
        "network": st.fixed_dictionaries({}, optional={
            "classID": n, "priorities": st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["lo", "eth0", "", "x" * 20]), "priority": n}),
                max_size=2)}),
        "rdma": st.dictionaries(st.sampled_from(["mlx4_0", "", "x"]), st.fixed_dictionaries(
            {}, optional={"hcaHandles": n, "hcaObjects": n}), max_size=1),
        "unified": st.dictionaries(
            st.sampled_from(["memory.max", "pids.max", "cpu.weight", "cgroup.procs",
                             "cgroup.subtree_control", "../x", "/etc/passwd", "a/b", "",
                             "memory.bogus", "hugetlb.2MB.max", "cgroup.kill",
                             "cgroup.freeze"]),
            st.sampled_from(["1", "max", "", "-1", "x", "0", "\x00", "1\n2", "9" * 30]),
            max_size=2),
    })


def process_doc() -> st.SearchStrategy:
    """A plausible process object: every field with valid-ish and hostile values. The
    programs print nothing and exit 0 or 3 (`false` would be exit 1 without an error line)."""
    n = st.sampled_from(BOUNDARY_INTS)
    return st.fixed_dictionaries({
        "args": st.sampled_from([["true"], ["/bin/true"], ["sh", "-c", "exit 3"],
                                 ["/nonexistent"], [""], [], ["/proc/self/exe"], ["/"],
                                 ["/dev/null"], ["\ud800"], ["a\x00b"], ["true", "x" * 70000]]),
        "cwd": st.sampled_from(["/", "/tmp", "relative", "", "/nonexistent", "/etc/passwd",
                                "/x\x00y", "/proc/self/cwd", "\ud800"]) | long_string(),
    }, optional={
        "terminal": st.booleans() | scalars(),
        "env": st.lists(st.sampled_from(["PATH=/bin:/usr/bin", "A=1", "", "=", "A=\x00", "A",
                                         "\ud800=1", "A=" + "x" * 70000]) | odd_text(),
                        max_size=4),
        "user": st.fixed_dictionaries({"uid": n, "gid": n}, optional={
            "umask": n, "additionalGids": st.lists(n, max_size=3),
            "username": st.sampled_from(["root", "nobody", "", "\x00", "x" * 300])}),
        "capabilities": st.fixed_dictionaries({}, optional={
            k: st.lists(st.sampled_from(["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                                         "CAP_NOPE", "", "cap_chown", "CAP_LAST_CAP",
                                         "CAP_BPF", "\x00"]), max_size=3)
            for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}),
        "rlimits": st.lists(rlimit_entry(), max_size=3),
        "noNewPrivileges": st.booleans() | scalars(),
        "oomScoreAdj": n, "apparmorProfile": st.sampled_from(["", "unconfined", "x\x00"]),
        "selinuxLabel": st.sampled_from(["", "system_u:system_r:x"]),
        "ioPriority": st.fixed_dictionaries({
            "class": st.sampled_from(["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE",
                                      "IOPRIO_CLASS_BOGUS", ""]), "priority": n}),
        "scheduler": st.fixed_dictionaries({
            "policy": st.sampled_from(["SCHED_OTHER", "SCHED_FIFO", "SCHED_BATCH", "SCHED_IDLE",
                                       "SCHED_DEADLINE", "SCHED_BOGUS", ""])},
            optional={"nice": n, "priority": n, "flags": st.lists(
                st.sampled_from(["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_BOGUS", ""]),
                max_size=2), "runtime": n, "deadline": n, "period": n}),
        "execCPUAffinity": st.fixed_dictionaries({}, optional={
            "initial": st.sampled_from(["0", "0-1", "", "x", "0-99999", "1,"]),
            "final": st.sampled_from(["0", "0-1", "", "x", "99999"])}),
        "consoleSize": st.fixed_dictionaries({"height": n, "width": n}),
    })


# a generated cgroupsPath stays inside the test's own cgroup (relative) or under a
# fuzz-only top-level name (absolute); values that resolve to a host cgroup are in KNOWN
SAFE_CGROUPS_PATHS = ["fuzz-cg", "fuzz-cg/a/b", "/pyoci-fuzz-cg", "/pyoci-fuzz-cg/x",
                      "fuzz-cg/../fuzz-cg2", "fuzz:cg", "fuzz cg", "fuzz-" + "x" * 250,
                      "fuzz-" + "x" * 300, "fuzz-\u00e9", "fuzz-cg/", "", 5, None, [], {}]


def config_pieces(cid: str) -> st.SearchStrategy:
    """(path, value) pieces laid into a config: plausible objects with hostile leaves."""
    return st.one_of(
        st.tuples(st.just(("mounts", -1)), mount_entry()),
        st.tuples(st.sampled_from([("hooks", h) for h in (
            "prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop")]), st.lists(hook_entry(), min_size=1, max_size=2)),
        st.tuples(st.just(("linux", "namespaces", -1)), namespace_entry()),
        st.tuples(st.just(("linux", "devices", -1)), device_entry()),
        st.tuples(st.just(("process", "rlimits")), st.lists(rlimit_entry(), max_size=3)),
        st.tuples(st.just(("linux", "resources")), resources_doc()),
        st.tuples(st.just(("process",)), process_doc()),
        st.tuples(st.just(("linux", "cgroupsPath")), st.sampled_from(SAFE_CGROUPS_PATHS)),
        st.tuples(st.sampled_from([("linux", "maskedPaths"), ("linux", "readonlyPaths")]),
                  st.lists(hostile_path(), max_size=3)),
        st.tuples(st.just(("linux", "sysctl")), st.dictionaries(
            st.sampled_from(["net.ipv4.ip_forward", "kernel.shmmax", "kernel.hostname",
                             "fs.mqueue.msg_max", "vm.swappiness", "", "../x", "net/ipv4/x",
                             "kernel.msgmax"]),
            st.sampled_from(["0", "1", "", "x", "\x00", "99999999999999999999"]), max_size=2)),
        st.tuples(st.sampled_from([("hostname",), ("domainname",)]), hostile_path()),
        st.tuples(st.just(("root",)), st.fixed_dictionaries(
            {"path": st.sampled_from(["rootfs", "./rootfs", "rootfs/", "rootfs/../rootfs",
                                      "nonexistent", "", "config.json", "\ud800", "a\x00b",
                                      "rootfs-link"]) | long_string()},
            optional={"readonly": st.booleans() | scalars()})),
        st.tuples(st.just(("linux", "rootfsPropagation")),
                  st.sampled_from(["private", "rprivate", "slave", "rslave", "", "bogus",
                                   "shared", "rshared", "unbindable"])),
        st.tuples(st.just(("linux", "seccomp")), st.fixed_dictionaries(
            {"defaultAction": st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO",
                                               "SCMP_ACT_BOGUS", ""])},
            optional={"architectures": st.lists(st.sampled_from(
                ["SCMP_ARCH_X86_64", "SCMP_ARCH_BOGUS", ""]), max_size=2),
                "defaultErrnoRet": st.sampled_from(BOUNDARY_INTS),
                "listenerPath": st.sampled_from(["", "/nonexistent.sock", "/dev/null"]),
                "syscalls": st.lists(st.fixed_dictionaries({
                    "names": st.lists(st.sampled_from(["getcwd", "bogus_call", "", "\x00",
                                                       "x" * 300]), max_size=2),
                    "action": st.sampled_from(["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW",
                                               "SCMP_ACT_NOTIFY", "SCMP_ACT_KILL", "x"])},
                    optional={"args": st.lists(st.fixed_dictionaries({
                        "index": st.sampled_from(BOUNDARY_INTS),
                        "value": st.sampled_from(BOUNDARY_INTS),
                        "op": st.sampled_from(["SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ", "x"])}),
                        max_size=7)}), max_size=2)})),
        st.tuples(st.just(("linux", "netDevices")), st.dictionaries(
            st.sampled_from(["fuzz0", "", "a/b", "x" * 20, "\x00", "."]),   # never a real host
            st.fixed_dictionaries({}, optional={"name": st.sampled_from(["eth0", "", "x" * 20,
                                                                          "a/b"])}),
            max_size=1)),
        st.tuples(st.just(("linux", "uidMappings")), st.lists(st.fixed_dictionaries({
            "containerID": st.sampled_from(BOUNDARY_INTS), "hostID": st.sampled_from(BOUNDARY_INTS),
            "size": st.sampled_from(BOUNDARY_INTS)}), max_size=2)),
        st.tuples(st.just(("annotations",)), st.dictionaries(odd_text(), scalars(), max_size=3)),
        st.tuples(st.just(("ociVersion",)), st.sampled_from(["1.0.0", "1.3.0", "1.4.0", "2.0.0",
                                                            "0.1", "", "1.0.0-rc1", "x"])),
    )


CONFIG_KEYS = ["ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks",
               "annotations", "linux", "args", "env", "cwd", "user", "capabilities", "rlimits",
               "terminal", "namespaces", "resources", "cgroupsPath", "devices", "seccomp",
               "sysctl", "maskedPaths", "readonlyPaths", "uidMappings", "gidMappings",
               "destination", "source", "type", "options", "path", "x-unknown", "windows",
               "solaris", "vm", "intelRdt", "memoryPolicy", "timeOffsets", "personality"]

# config paths the generic mutations leave alone (only the safe pieces above touch them)
CONFIG_BLOCKED = [("linux", "cgroupsPath"), ("linux", "netDevices")]


@st.composite
def raw_file(draw, valid: str) -> bytes:
    """config.json (or another JSON file) as bytes: truncated, wrapped, or odd encodings."""
    kind = draw(st.sampled_from(["empty", "truncated", "bom", "nan", "garbage", "utf16",
                                 "trailing", "huge_ws", "dup_keys", "latin1"]))
    b = valid.encode("utf-8", "surrogatepass")
    if kind == "empty":
        return b""
    if kind == "truncated":
        # a cut drawn independently of the length: the file may be a live state.json whose
        # length changes between runs, and Hypothesis needs the same draws to replay a case
        return b[:draw(st.integers(0, 1 << 20)) % max(1, len(b))]
    if kind == "bom":
        return b"\xef\xbb\xbf" + b
    if kind == "nan":
        return b.replace(b"true", b"NaN", 1).replace(b"0", b"Infinity", 1)
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "utf16":
        return valid.encode("utf-16", "surrogatepass")
    if kind == "trailing":
        return b + b" x"
    if kind == "huge_ws":
        return b" " * 3_000_000 + b
    if kind == "dup_keys":
        return b.replace(b"{", b'{"ociVersion": 5, ', 1)
    return b.replace(b'"', b'"\xe9', 1)


# --- running pyoci and judging its output ------------------------------------------------------

class Failure(AssertionError):
    pass


def run(root: str | None, *args, timeout: float = TIMEOUT, **kw) -> Result:
    """Run pyoci --root ROOT ARGS (no --root when root is None; kw: cwd, stdin, env); a run
    past the timeout is a hang (killed, then Failure)."""
    try:
        r = Runtime(PYOCI, root)(*args, timeout=timeout, **kw)
    except Hang as e:
        raise Failure(str(e)) from None
    if r.elapsed > SLOW:
        _slow(r)
    return r


SLOW = float(os.environ.get("PYOCI_FUZZ_SLOW", "2"))


def _slow(r: Result) -> None:
    """A command slower than SLOW seconds (not a failure: a hang is): an event, and a line
    in $PYOCI_FUZZ_SLOW_LOG if set."""
    try:
        from hypothesis import event

        event(f"slow (> {SLOW:g} s): {short_argv(r.args)[3] if len(r.args) > 3 else r.args}")
    except Exception:  # noqa: BLE001 - outside a test
        pass
    log = os.environ.get("PYOCI_FUZZ_SLOW_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{r.elapsed:.1f}s {r!r}\n")


_WARNING = re.compile(r'^time="[^"]*" level=(warning|info|debug) msg=')


def check_output(r: Result, ok_codes=(0,), known=()) -> str | None:
    """Exit 0 (or another expected code) or exit 1 with one line naming what is wrong.
    Returns the error line (None on success). `known`: (regex, reason) pairs of bugs another
    part of issue 11 is fixing; a match raises KnownBug instead of Failure."""
    text = r.out + r.err
    problem = None
    if "Traceback" in text:
        problem = "a traceback"
    elif r.rc in ok_codes:
        errors = [ln for ln in r.err.splitlines() if ln.startswith("pyoci:")]
        if errors and r.rc == 0:
            problem = "an error line with exit 0"
    elif r.rc != 1:
        problem = f"exit code {r.rc}"
    else:
        lines = [ln for ln in r.err.splitlines() if ln and not _WARNING.match(ln)]
        if len(lines) != 1:
            problem = f"{len(lines)} error lines"
        elif not lines[0].startswith("pyoci: "):
            problem = "an error line without the pyoci: prefix"
        else:
            msg = lines[0][len("pyoci: "):]
            if "internal error" in msg:
                problem = "an internal error"
            elif len(msg) < 8 or " " not in msg.strip() and ":" not in msg:
                problem = "an error that names nothing"
            else:
                return msg
    if problem is None:
        return None
    for pattern, reason in known:
        if re.search(pattern, text):
            raise KnownBug(reason, r)
    raise Failure(f"{problem}: {r!r}")


class KnownBug(Exception):
    """A failure another part of issue 11 is fixing (tolerated by the fuzz until it lands;
    tests/test_fuzz.py has each as a strict xfail example)."""

    def __init__(self, reason: str, r: Result):
        super().__init__(f"{reason}: {r!r}")
        self.reason = reason


# --- what a case may leave behind -------------------------------------------------------------

def _cgroup_roots() -> list[str]:
    """This process's own cgroup directory in every mounted hierarchy."""
    from pyoci.cgroups import paths

    mounts = paths.cgroup_mounts()
    own = paths.own_cgroups()
    out = []
    seen = set()
    for m in mounts:
        key = "" if m.fstype == "cgroup2" else sorted(m.controllers)[0] if m.controllers else None
        if key is None:
            continue
        d = paths.resolve(m, own.get(key), ".")
        if d not in seen and os.path.isdir(d):
            seen.add(d)
            out.append(d)
    return out


def _walk_dirs(top: str) -> set[str]:
    out = set()
    for dirpath, dirnames, _ in os.walk(top):
        for d in dirnames:
            out.add(os.path.join(dirpath, d))
    return out


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


# where other test runs on the same host mount things of their own (not this case's)
OTHERS_MOUNT = ("/tmp/", "/run/", "/var/lib/", "/var/run/")


def _mounts(mine: str = "") -> set[str]:
    """(root, mount point) of every mount of this mount namespace, but those of other runs:
    anything under /tmp or /run that is not under `mine` (this test's directory)."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            root, point = line.split()[3:5]
            if point.startswith(OTHERS_MOUNT) and not (mine and point.startswith(mine)):
                continue
            out.add(f"{root} {point}")
    return out


def extra_cgroup_dirs(cgroups_path, cid: str) -> list[str]:
    """The directories a container with this cgroupsPath would get (where computable)."""
    from pyoci.cgroups import paths

    try:
        out = list(paths.v1_paths(cgroups_path, cid).values())
        u = paths.unified_path(cgroups_path, cid)
        if u:
            out.append(u)
    except Exception:  # noqa: BLE001 - not a path pyoci could use either
        return []
    return out


class Snapshot:
    """What exists before a case: state entries under root, cgroups under this process's own
    cgroups, mounts, descendant processes, this process's fds."""

    def __init__(self, root: str, keep_pids: Iterable[int] = (), cgroup_dirs=(),
                 mine: str | None = None):
        """mine: the test's own directory (bundles): mounts under it are counted, and any
        outside /tmp and /run (default: the directory of root, when that is not /tmp)."""
        reap_zombies()
        self.root = root
        if mine is None:
            mine = os.path.dirname(root.rstrip("/"))
            if mine.rstrip("/") in ("/tmp", "/run", ""):
                mine = root
        self.mine = mine.rstrip("/") + "/"
        self.entries = set(os.listdir(root)) if os.path.isdir(root) else set()
        self.roots = _cgroup_roots()
        self.cgroups = set().union(*(_walk_dirs(r) for r in self.roots))
        self.extra = {d for d in cgroup_dirs if os.path.exists(d)}
        self.extra_dirs = list(cgroup_dirs)
        self.mounts = _mounts(self.mine)
        self.pids = _descendants(os.getpid()) | set(keep_pids)
        self.fds = set(os.listdir("/proc/self/fd"))

    def leftovers(self) -> list[str]:
        reap_zombies()
        out = []
        entries = set(os.listdir(self.root)) if os.path.isdir(self.root) else set()
        if entries - self.entries:
            out.append(f"state entries {sorted(entries - self.entries)}")
        now = set().union(*(_walk_dirs(r) for r in self.roots))
        if now - self.cgroups:
            out.append(f"cgroups {sorted(now - self.cgroups)[:6]}")
        extra = {d for d in self.extra_dirs if os.path.exists(d)} - self.extra - now
        if extra:
            out.append(f"cgroups {sorted(extra)[:6]}")
        mounts = _mounts(self.mine) - self.mounts
        if mounts:
            out.append(f"mounts {sorted(mounts)[:6]}")
        pids = _descendants(os.getpid()) - self.pids
        pids = {p for p in pids if _alive(p)}
        if pids:
            out.append(f"processes {sorted(pids)} " + ", ".join(_cmdline(p) for p in pids))
        fds = set(os.listdir("/proc/self/fd")) - self.fds
        fds = {f for f in fds if os.path.exists(f"/proc/self/fd/{f}")}
        if fds:
            out.append(f"fds {sorted(fds)}")
        return out

    def check(self, what: str = "") -> None:
        left = self.leftovers()
        if left:
            # a process may still be on its way out (SIGKILL delivered, not yet reaped)
            time.sleep(0.3)
            left = self.leftovers()
        if left:
            raise Failure(f"left behind{(' by ' + what) if what else ''}: " + "; ".join(left))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


def kill_descendants(keep: set[int]) -> None:
    """After a failed case: end what it left (our own descendants only), so the next case
    starts clean."""
    killed = False
    for pid in sorted(_descendants(os.getpid()) - set(keep)):
        try:
            os.kill(pid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            pass
    if killed:
        time.sleep(0.1)
    reap_zombies()
