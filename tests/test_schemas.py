"""spec-schemas/ against the upstream OCI runtime-spec v1.3.0 schemas.

(a) every upstream fixture gets the same verdict from both schema sets (and the fast path);
(b) a hypothesis corpus of valid documents and of broken ones gets the same verdict from both,
    except where spec-schemas/ is deliberately stricter (INTENTIONAL_DIFFERENCES);
(c) the generated fast path and jsonschema on spec-schemas/ agree on that corpus;
(d) the ConfigError names the JSON path of the broken value.

The upstream schemas are read from ../shared/upstream/runtime-spec-v1.3.0/schema relative to the
repository root; tests needing them skip when that directory is absent.
"""

from __future__ import annotations

import copy
import functools
import glob
import json
import os
import string

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyoci.errors import ConfigError
from pyoci.spec import _compiled_validator as fast
from pyoci.spec.validate import json_path, validate_config, validate_features, validate_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(REPO, "spec-schemas")
UPSTREAM = os.path.normpath(
    os.path.join(REPO, "..", "shared", "upstream", "runtime-spec-v1.3.0", "schema")
)
ROOTS = {"config": "config-schema.json", "state": "state-schema.json", "features": "features-schema.json"}
FAST = {"config": fast.is_valid_config, "state": fast.is_valid_state, "features": fast.is_valid_features}
VALIDATE = {"config": validate_config, "state": validate_state, "features": validate_features}
LABEL = {"config": "config.json", "state": "state", "features": "features"}

needs_upstream = pytest.mark.skipif(
    not os.path.isdir(UPSTREAM), reason=f"upstream runtime-spec schemas not found at {UPSTREAM}"
)

# Where spec-schemas/ deliberately rejects what the upstream schemas accept (a document valid
# for spec-schemas/ is always valid upstream). Paths are JSON paths of the constrained value.
INTENTIONAL_DIFFERENCES = {
    ("ociVersion",): "config.md: ociVersion MUST be in SemVer v2.0.0 format",
    ("ociVersionMin",): "features.md: a SemVer version, like config ociVersion",
    ("ociVersionMax",): "features.md: a SemVer version, like config ociVersion",
    ("process", "args"): "config.md: at least one entry is REQUIRED (non-Windows)",
    ("linux", "intelRdt", "schemata"): "features-linux.md v1.3.0: bool; upstream schema lacks it",
}

# Where spec-schemas/ deliberately accepts what the upstream schemas reject, because runc
# and crun (and real clients) do: the departures recorded in spec-schemas/README.md and in
# the conformance report. Paths as above, "*" for any array index; (path, how) -> example.
DEPARTURES = {
    ("linux", "rootfsPropagation"): "runc, crun, docker and containerd's CRI use rprivate, "
                                    "rshared, rslave, runbindable",
    ("process", "consoleSize", "height"): "runc and crun take a missing height as 0",
    ("process", "consoleSize", "width"): "runc and crun take a missing width as 0",
    ("linux", "resources", "pids", "limit"): "runc and crun take a missing limit as no limit",
    ("linux", "seccomp", "syscalls", "*", "args", "*", "index"): "runc and crun default to 0",
    ("linux", "seccomp", "syscalls", "*", "args", "*", "value"): "runc and crun default to 0",
}


def departure(path: tuple) -> bool:
    """Whether path (a JSON path of the mutated value) is one of DEPARTURES."""
    for dp in DEPARTURES:
        if len(dp) == len(path) and all(d == "*" and isinstance(p, int) or d == p
                                        for d, p in zip(dp, path)):
            return True
    return False


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---- validators -----------------------------------------------------------------------------


@functools.cache
def jsonschema_validator(schema_dir: str, kind: str):
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    registry = Registry()
    for path in sorted(glob.glob(os.path.join(schema_dir, "*.json"))):
        with open(path, encoding="utf-8") as f:
            resource = Resource.from_contents(json.load(f), default_specification=DRAFT4)
        registry = registry.with_resource(os.path.basename(path), resource)
    root = registry.contents(ROOTS[kind])
    Draft4Validator.check_schema(root)
    return Draft4Validator(root, registry=registry)


def verdicts(kind: str, doc) -> tuple[bool, bool, bool]:
    """(upstream valid, ours valid by jsonschema, ours valid by the fast path)."""
    return (
        jsonschema_validator(UPSTREAM, kind).is_valid(doc),
        jsonschema_validator(OURS, kind).is_valid(doc),
        FAST[kind](doc),
    )


VERSION_KEYS = {"ociVersion", "ociVersionMin", "ociVersionMax"}


def may_differ(kind: str, how: str, path: tuple) -> bool:
    """Whether this mutation can hit an intentional difference (the random mutations cannot
    empty process.args: test_targeted_breakage covers that one)."""
    if path[0] in VERSION_KEYS:
        return how == "edge-string"  # a string that is not SemVer
    return kind == "features" and path[:3] == ("linux", "intelRdt", "schemata")


# ---- (a) upstream fixtures ------------------------------------------------------------------


def fixtures():
    found = sorted(glob.glob(os.path.join(UPSTREAM, "test", "*", "*", "*.json")))
    return [pytest.param(p, id=os.path.relpath(p, os.path.join(UPSTREAM, "test"))) for p in found] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no upstream fixtures"))
    ]


@needs_upstream
@pytest.mark.parametrize("path", fixtures())
def test_upstream_fixture_gets_the_same_verdict(path):
    kind, expected = path.split(os.sep)[-3:-1]
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except ValueError:
        assert expected == "bad"  # not JSON at all: both reject before any schema applies
        return
    upstream, ours, quick = verdicts(kind, doc)
    assert upstream == (expected == "good")
    assert ours == upstream
    assert quick == ours


# ---- strategies: valid documents ------------------------------------------------------------


def enum(name: str, upstream_name: str | None = None) -> list[str]:
    """The values of a defs-linux.json enum: ours plus upstream's (when present), so that a value
    only one side knows shows up in the corpus as a disagreement."""
    with open(os.path.join(OURS, "defs-linux.json"), encoding="utf-8") as f:
        values = set(json.load(f)["definitions"][name]["enum"])
    upstream = os.path.join(UPSTREAM, "defs-linux.json")
    if upstream_name and os.path.exists(upstream):
        with open(upstream, encoding="utf-8") as f:
            values |= set(json.load(f)["definitions"][upstream_name]["enum"])
    return sorted(values)


NAMESPACES = enum("NamespaceType", "NamespaceType")
ACTIONS = enum("SeccompAction", "SeccompAction")
OPERATORS = enum("SeccompOperator", "SeccompOperators")
ARCHS = enum("SeccompArch", "SeccompArch")
SECCOMP_FLAGS = enum("SeccompFlag", "SeccompFlag")
POLICIES = enum("SchedulerPolicy", "SchedulerPolicy")
SCHED_FLAGS = enum("SchedulerFlag", "SchedulerFlag")
PROPAGATION = enum("RootfsPropagation")
# the values upstream knows too: the valid corpus must be valid everywhere (ours-only values
# are DEPARTURES, tested by test_departures_are_accepted)
PROPAGATION = [p for p in PROPAGATION if not p.startswith("r")]
MPOL_MODES = enum("MemoryPolicyMode", "MemoryPolicyMode")
MPOL_FLAGS = enum("MemoryPolicyFlag", "MemoryPolicyFlag")
DOMAINS = enum("PersonalityDomain", "PersonalityDomain")
IOPRIO = enum("IOPriorityClass")
HOOK_POINTS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_AUDIT_WRITE"]
VERSIONS = ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0", "1.3.0-rc.1+build.5"]


def obj(required: dict, optional: dict | None = None):
    return st.fixed_dictionaries(required, optional=optional or {})


def few(strategy, min_size: int = 0):
    return st.lists(strategy, min_size=min_size, max_size=3)


def ints(bits: int, signed: bool):
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else st.integers(0, 2**bits - 1)


i32, i64, u16, u32, u64 = ints(32, True), ints(64, True), ints(16, False), ints(32, False), ints(64, False)
booleans = st.booleans()
texts = st.text(max_size=8)
names = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=10)
paths = st.builds(lambda parts: "/" + "/".join(parts), few(names))
string_lists = few(texts)
string_maps = st.dictionaries(names, texts, max_size=3)
cpu_lists = st.sampled_from(["0", "0-3", "0,2,4", "1-2, 5", ""])

id_mapping = obj({"containerID": u32, "hostID": u32, "size": u32})
hook = obj({"path": paths}, {"args": string_lists, "env": string_lists, "timeout": st.integers(1, 2**40)})
mount = obj(
    {"destination": paths},
    {"source": paths, "type": names, "options": few(st.sampled_from(["ro", "nosuid", "rbind", "nodev"])),
     "uidMappings": few(id_mapping), "gidMappings": few(id_mapping)},
)
process = obj(
    {"cwd": paths},
    {
        "args": few(texts, min_size=1),
        "env": string_lists,
        "terminal": booleans,
        "consoleSize": obj({"height": u64, "width": u64}),
        "commandLine": texts,
        "user": obj({}, {"uid": u32, "gid": u32, "umask": u32, "additionalGids": few(u32), "username": names}),
        "capabilities": obj({}, {k: few(st.sampled_from(CAPS)) for k in
                                 ["bounding", "effective", "inheritable", "permitted", "ambient"]}),
        "rlimits": few(obj({"type": st.sampled_from(["RLIMIT_NOFILE", "RLIMIT_CORE"]), "soft": u64, "hard": u64})),
        "noNewPrivileges": booleans,
        "apparmorProfile": names,
        "oomScoreAdj": st.integers(-1000, 1000),
        "selinuxLabel": names,
        "ioPriority": obj({"class": st.sampled_from(IOPRIO)}, {"priority": i32}),
        "scheduler": obj(
            {"policy": st.sampled_from(POLICIES)},
            {"nice": i32, "priority": i32, "flags": few(st.sampled_from(SCHED_FLAGS)),
             "runtime": u64, "deadline": u64, "period": u64},
        ),
        "execCPUAffinity": obj({}, {"initial": cpu_lists, "final": cpu_lists}),
    },
)
syscall = obj(
    {"names": few(names, min_size=1), "action": st.sampled_from(ACTIONS)},
    {"errnoRet": u32, "args": few(obj({"index": u32, "value": u64, "op": st.sampled_from(OPERATORS)},
                                      {"valueTwo": u64}))},
)
seccomp = obj(
    {"defaultAction": st.sampled_from(ACTIONS)},
    {"defaultErrnoRet": u32, "architectures": few(st.sampled_from(ARCHS)),
     "flags": few(st.sampled_from(SECCOMP_FLAGS)), "listenerPath": paths, "listenerMetadata": texts,
     "syscalls": few(syscall)},
)
block_rate = obj({"major": i64, "minor": i64}, {"rate": u64})
resources = obj(
    {},
    {
        "devices": few(obj({"allow": booleans}, {"type": st.sampled_from("abc"), "major": i64, "minor": i64,
                                                  "access": st.sampled_from(["rwm", "r", "mw"])})),
        "memory": obj({}, {**{k: i64 for k in ["limit", "reservation", "swap", "kernel", "kernelTCP"]},
                           "swappiness": u64, "disableOOMKiller": booleans, "useHierarchy": booleans,
                           "checkBeforeUpdate": booleans}),
        "cpu": obj({}, {"shares": u64, "quota": i64, "burst": u64, "period": u64, "realtimeRuntime": i64,
                        "realtimePeriod": u64, "cpus": cpu_lists, "mems": cpu_lists, "idle": i64}),
        "blockIO": obj({}, {"weight": u16, "leafWeight": u16,
                            "weightDevice": few(obj({"major": i64, "minor": i64},
                                                    {"weight": u16, "leafWeight": u16})),
                            **{k: few(block_rate) for k in ["throttleReadBpsDevice", "throttleWriteBpsDevice",
                                                             "throttleReadIOPSDevice", "throttleWriteIOPSDevice"]}}),
        "hugepageLimits": few(obj({"pageSize": st.sampled_from(["2MB", "1GB", "64KB"]), "limit": u64})),
        "network": obj({}, {"classID": u32, "priorities": few(obj({"name": names, "priority": u32}))}),
        "pids": obj({"limit": i64}),
        "rdma": st.dictionaries(names, obj({}, {"hcaHandles": u32, "hcaObjects": u32}), max_size=2),
        "unified": string_maps,
    },
)
time_offset = obj({}, {"secs": i64, "nanosecs": u32})
linux = obj(
    {},
    {
        "namespaces": few(obj({"type": st.sampled_from(NAMESPACES)}, {"path": paths})),
        "uidMappings": few(id_mapping),
        "gidMappings": few(id_mapping),
        "timeOffsets": obj({}, {"boottime": time_offset, "monotonic": time_offset}),
        "devices": few(obj({"type": st.sampled_from("cbup"), "path": paths},
                           {"major": i64, "minor": i64, "fileMode": st.integers(0, 511), "uid": u32, "gid": u32})),
        "netDevices": st.dictionaries(names, obj({}, {"name": names}), max_size=2),
        "cgroupsPath": paths,
        "resources": resources,
        "intelRdt": obj({}, {"closID": names, "schemata": string_lists, "l3CacheSchema": texts,
                             "memBwSchema": st.sampled_from(["MB:0=20;1=70", "MB:"]), "enableMonitoring": booleans}),
        "sysctl": string_maps,
        "seccomp": seccomp,
        "rootfsPropagation": st.sampled_from(PROPAGATION),
        "maskedPaths": few(paths),
        "readonlyPaths": few(paths),
        "mountLabel": texts,
        "personality": obj({}, {"domain": st.sampled_from(DOMAINS), "flags": string_lists}),
        "memoryPolicy": obj({}, {"mode": st.sampled_from(MPOL_MODES), "nodes": cpu_lists,
                                 "flags": few(st.sampled_from(MPOL_FLAGS))}),
    },
)
configs = obj(
    {"ociVersion": st.sampled_from(VERSIONS)},
    {
        "root": obj({"path": paths}, {"readonly": booleans}),
        "mounts": few(mount),
        "process": process,
        "hostname": names,
        "domainname": names,
        "hooks": obj({}, {k: few(hook) for k in HOOK_POINTS}),
        "annotations": string_maps,
        "linux": linux,
    },
)
states = obj(
    {"ociVersion": st.sampled_from(VERSIONS), "id": names,
     "status": st.sampled_from(["creating", "created", "running", "stopped"]), "bundle": paths},
    {"pid": st.integers(0, 2**22), "annotations": string_maps},
)
toggle = obj({}, {"enabled": booleans})
features = obj(
    {"ociVersionMin": st.sampled_from(VERSIONS), "ociVersionMax": st.sampled_from(VERSIONS)},
    {
        "hooks": few(st.sampled_from(HOOK_POINTS)),
        "mountOptions": few(names),
        "annotations": string_maps,
        "potentiallyUnsafeConfigAnnotations": few(names),
        "linux": obj({}, {
            "namespaces": few(st.sampled_from(NAMESPACES)),
            "capabilities": few(st.sampled_from(CAPS)),
            "cgroup": obj({}, {k: booleans for k in ["v1", "v2", "systemd", "systemdUser", "rdma"]}),
            "seccomp": obj({}, {"enabled": booleans, "actions": few(st.sampled_from(ACTIONS)),
                                "operators": few(st.sampled_from(OPERATORS)), "archs": few(st.sampled_from(ARCHS)),
                                "knownFlags": few(st.sampled_from(SECCOMP_FLAGS)),
                                "supportedFlags": few(st.sampled_from(SECCOMP_FLAGS))}),
            "apparmor": toggle,
            "selinux": toggle,
            "intelRdt": obj({}, {"enabled": booleans, "schemata": booleans}),
            "mountExtensions": obj({}, {"idmap": toggle}),
            "netDevices": toggle,
        }),
    },
)
DOCS = {"config": configs, "state": states, "features": features}


# ---- strategies: broken documents -----------------------------------------------------------


def locations(node, path=()):
    """(path, value) of every value below the root."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield path + (key,), value
        yield from locations(value, path + (key,))


def get_in(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    for t, name in [(int, "integer"), (float, "float"), (str, "string"), (list, "array"), (dict, "object")]:
        if isinstance(value, t):
            return name
    return "null"


WRONG_TYPED = ["x", 7, 1.0, True, None, [], {}, ["x"], {"k": "v"}]
EDGE_NUMBERS = [-1, 0, 1, 100, 101, 511, 512, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**31) - 1, -(2**63), -(2**63) - 1]
EDGE_STRINGS = ["bogus", "", "64kB", "1.0", "v1.0.0", "RLIMIT_nofile", "CAP_chown", "x\ny", "MB", "SCMP_ACT_FOO"]


@st.composite
def mutated(draw, kind: str):
    """A valid document of kind with one random change: (doc, how, path)."""
    doc = draw(DOCS[kind])
    how = draw(st.sampled_from(["wrong-type", "drop-key", "edge-number", "edge-string"]))
    places = list(locations(doc))
    if how == "drop-key":
        places = [(p, v) for p, v in places if isinstance(p[-1], str)] + [((k,), doc[k]) for k in doc]
    elif how == "edge-number":
        places = [(p, v) for p, v in places if json_type(v) == "integer"]
    elif how == "edge-string":
        places = [(p, v) for p, v in places if isinstance(v, str)]
    if not places:
        how, places = "drop-key", [((k,), doc[k]) for k in doc]
    elsewhere = [(p, v) for p, v in places if p[0] not in VERSION_KEYS]
    if elsewhere and draw(st.integers(0, 9)) < 8:  # small documents: mostly mutate the rest
        places = elsewhere
    path, value = draw(st.sampled_from(places))
    doc = copy.deepcopy(doc)
    parent = get_in(doc, path[:-1])
    if how == "drop-key":
        del parent[path[-1]]
    elif how == "wrong-type":
        parent[path[-1]] = draw(st.sampled_from([w for w in WRONG_TYPED if json_type(w) != json_type(value)]))
    elif how == "edge-number":
        parent[path[-1]] = draw(st.sampled_from(EDGE_NUMBERS))
    else:
        parent[path[-1]] = draw(st.sampled_from(EDGE_STRINGS))
    return doc, how, path


def message_of(kind: str, doc) -> str:
    with pytest.raises(ConfigError) as info:
        VALIDATE[kind](doc)
    message = str(info.value)
    assert "\n" not in message
    return message


def assert_names_path(kind: str, doc, path: tuple, how: str) -> None:
    """(d): the one-line error points at the broken value (its parent for a missing key)."""
    label, message = LABEL[kind], message_of(kind, doc)
    if how == "drop-key":
        where = json_path(path[:-1])
        rule = f"{path[-1]!r} is a required property"
        assert message == (f"{label}: {where}: {rule}" if where else f"{label}: {rule}")
    else:
        assert message.startswith(f"{label}: {json_path(path)}: "), message


# ---- (b) (c) (d) on the corpus --------------------------------------------------------------


@needs_upstream
@pytest.mark.parametrize("kind", list(DOCS))
@SETTINGS
@given(data=st.data())
def test_valid_corpus_is_valid_everywhere(kind, data):
    doc = data.draw(DOCS[kind])
    assert verdicts(kind, doc) == (True, True, True)
    VALIDATE[kind](doc)


@needs_upstream
@pytest.mark.parametrize("kind", list(DOCS))
@settings(SETTINGS, max_examples=400)
@given(data=st.data())
def test_mutated_corpus_same_verdict(kind, data):
    doc, how, path = data.draw(mutated(kind))
    upstream, ours, quick = verdicts(kind, doc)
    differ = may_differ(kind, how, path)
    event(f"{how}: {'rejected' if not ours else 'accepted'}{' (may differ)' if differ else ''}")
    assert quick == ours  # (c)
    if kind == "config" and how == "drop-key" and departure(path):
        assert ours  # optional upstream, or required there and not here (DEPARTURES)
        return
    if differ:
        assert upstream or not ours  # we may be stricter, never laxer
    else:
        assert ours == upstream  # (b)
    if how == "wrong-type":
        assert not ours
    if not ours:
        assert_names_path(kind, doc, path, how)  # (d)


# Targeted breakage: every category named in the brief, on top of a random valid config.
# (path to set, value, JSON path the error must name, rule text it must contain, stricter-than-upstream)
TARGETED = [
    (("ociVersion",), "1.0", "ociVersion", "does not match", True),
    (("ociVersion",), "v1.3.0", "ociVersion", "does not match", True),
    (("ociVersion",), 1, "ociVersion", "is not of type 'string'", False),
    (("process",), {"cwd": "/", "args": []}, "process.args", "should be non-empty", True),
    (("process",), {"args": ["sh"]}, "process", "'cwd' is a required property", False),
    (("process",), {"cwd": "/", "user": {"uid": 2**32, "gid": 0}}, "process.user.uid", "maximum", False),
    (("process",), {"cwd": "/", "user": {"uid": 0, "gid": -1}}, "process.user.gid", "minimum", False),
    (("process",), {"cwd": "/", "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2**64, "hard": 1}]},
     "process.rlimits[0].soft", "maximum", False),
    (("process",), {"cwd": "/", "rlimits": [{"type": "NOFILE", "soft": 1, "hard": 1}]},
     "process.rlimits[0].type", "does not match", False),
    (("process",), {"cwd": "/", "scheduler": {"policy": "SCHED_FAST"}}, "process.scheduler.policy",
     "is not one of", False),
    (("process",), {"cwd": "/", "ioPriority": {"class": "IOPRIO_CLASS_NONE"}}, "process.ioPriority.class",
     "is not one of", False),
    (("root",), {}, "root", "'path' is a required property", False),
    (("root",), {"path": "rootfs", "readonly": "yes"}, "root.readonly", "is not of type 'boolean'", False),
    (("mounts",), [{"source": "proc", "type": "proc"}], "mounts[0]", "'destination' is a required property", False),
    (("mounts",), [{"destination": "/x", "options": "ro"}], "mounts[0].options", "is not of type 'array'", False),
    (("mounts",), [{"destination": "/x", "uidMappings": [{"containerID": 0, "hostID": 1}]}],
     "mounts[0].uidMappings[0]", "'size' is a required property", False),
    (("hooks",), {"prestart": [{"args": ["x"]}]}, "hooks.prestart[0]", "'path' is a required property", False),
    (("hooks",), {"poststop": [{"path": "/bin/true", "timeout": 0}]}, "hooks.poststop[0].timeout", "minimum", False),
    (("hooks",), {"createRuntime": {"path": "/x"}}, "hooks.createRuntime", "is not of type 'array'", False),
    (("annotations",), {"org.example": 1}, 'annotations["org.example"]', "is not of type 'string'", False),
    (("linux", "namespaces"), [{"type": "pid"}, {"type": "bogus"}], "linux.namespaces[1].type",
     "is not one of", False),
    (("linux", "namespaces"), [{"path": "/proc/1/ns/net"}], "linux.namespaces[0]",
     "'type' is a required property", False),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_FOO"}]},
     "linux.seccomp.syscalls[0].action", "is not one of", False),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_KILLALL"}, "linux.seccomp.defaultAction", "is not one of", False),
    (("linux", "seccomp"), {"syscalls": []}, "linux.seccomp", "'defaultAction' is a required property", False),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]},
     "linux.seccomp.syscalls[0].names", "should be non-empty", False),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]},
     "linux.seccomp.architectures[0]", "is not one of", False),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]},
     "linux.seccomp.syscalls[0].args[0].op", "is not one of", False),
    (("linux", "devices"), [{"type": "c", "path": "/dev/x", "fileMode": 512}], "linux.devices[0].fileMode",
     "maximum", False),
    (("linux", "devices"), [{"type": "x", "path": "/dev/x"}], "linux.devices[0].type", "does not match", False),
    (("linux", "resources"), {"memory": {"limit": 1.0}}, "linux.resources.memory.limit", "'integer'", False),
    (("linux", "resources"), {"cpu": {"shares": True}}, "linux.resources.cpu.shares", "'integer'", False),
    (("linux", "resources"), {"hugepageLimits": [{"pageSize": "64kB", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize", "does not match", False),
    (("linux", "resources"), {"blockIO": {"weightDevice": [{"major": 8, "weight": 10}]}},
     "linux.resources.blockIO.weightDevice[0]", "'minor' is a required property", False),
    (("linux", "rootfsPropagation"), "rbogus", "linux.rootfsPropagation", "is not one of", False),
    (("linux", "rootfsPropagation"), "", "linux.rootfsPropagation", "is not one of", False),
    (("linux", "uidMappings"), [{"containerID": 0, "hostID": 1000}], "linux.uidMappings[0]",
     "'size' is a required property", False),
    (("linux", "timeOffsets"), {"monotonic": {"nanosecs": -1}}, "linux.timeOffsets.monotonic.nanosecs",
     "minimum", False),
    (("linux", "memoryPolicy"), {"mode": "MPOL_RANDOM"}, "linux.memoryPolicy.mode", "is not one of", False),
    (("linux", "netDevices"), {"eth0": {"name": 23}}, "linux.netDevices.eth0.name", "is not of type 'string'", False),
]


@needs_upstream
@pytest.mark.parametrize("path, value, where, rule, stricter", TARGETED,
                         ids=[f"{t[2]}:{t[3]}" for t in TARGETED])
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=configs)
def test_targeted_breakage(base, path, value, where, rule, stricter):
    doc = copy.deepcopy(base)
    parent = doc
    for p in path[:-1]:
        parent = parent.setdefault(p, {})
    parent[path[-1]] = copy.deepcopy(value)
    upstream, ours, quick = verdicts("config", doc)
    assert (upstream, ours, quick) == (stricter, False, False)
    message = message_of("config", doc)
    assert message.startswith(f"config.json: {where}: "), message
    assert rule in message, message


def test_intentional_differences_are_few_and_documented():
    with open(os.path.join(OURS, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for path in INTENTIONAL_DIFFERENCES:
        assert ".".join(path) in readme


# What DEPARTURES accepts, on top of a random valid config: (path to set, value)
DEPARTURE_EXAMPLES = [
    (("linux", "rootfsPropagation"), "rprivate"),
    (("linux", "rootfsPropagation"), "rshared"),
    (("linux", "rootfsPropagation"), "rslave"),
    (("linux", "rootfsPropagation"), "runbindable"),
    (("process",), {"cwd": "/", "consoleSize": {"width": 80}}),
    (("process",), {"cwd": "/", "consoleSize": {}}),
    (("linux", "resources"), {"pids": {}}),
    (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"op": "SCMP_CMP_EQ"}]}]}),
]


@needs_upstream
@pytest.mark.parametrize("path, value", DEPARTURE_EXAMPLES,
                         ids=[f"{'.'.join(p)}={json.dumps(v)}" for p, v in DEPARTURE_EXAMPLES])
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=configs)
def test_departures_are_accepted(base, path, value):
    doc = copy.deepcopy(base)
    parent = doc
    for p in path[:-1]:
        parent = parent.setdefault(p, {})
    parent[path[-1]] = copy.deepcopy(value)
    assert verdicts("config", doc) == (False, True, True)
    validate_config(doc)


def test_departures_are_documented():
    with open(os.path.join(OURS, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for path in DEPARTURES:
        assert ".".join(p for p in path if p != "*") in readme.replace("[]", ""), path
