"""The container's config as typed records: config.json parsed once, after validation
(spec.load.validate), into what the rest of pyoci reads (as runc's `configs` package and
youki's oci-spec crate). Field names are the config's, in snake_case; every default lives
here, so a reader never writes `.get(...) or {}`: an absent list is [], an absent string
"", an absent object None (where its absence means something: no capabilities given, no
seccomp filter) or its empty record.

parse() trusts the schema: it takes the types as validated and converts nothing. An exec's
`process` (not validated by the schema) goes through spec.load.check_process first.

The records are plain objects (pyoci.record): the init, a fork of the runtime, inherits
them as they are. `Spec.raw` is the validated document itself, which the runtime stores in
the container's state directory (config.json, read back by start, exec and delete) and
which the waiter's rule (pyoci.linux.waiter.uses, asked before validation too) reads.
"""

from __future__ import annotations

from pyoci.record import dataclass, field

# The namespace types of linux.namespaces: the config's name -> /proc/PID/ns/ name.
NAMESPACES = {
    "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
    "user": "user", "cgroup": "cgroup", "time": "time",
}


def _dict(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if v is not None else {}


def _list(d: dict, key: str) -> list:
    v = d.get(key)
    return v if v is not None else []


# --- process ---------------------------------------------------------------------------------

@dataclass
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None                  # None: pyoci's default umask (0022)
    additional_gids: list[int] = field(default_factory=list)
    username: str = ""

    @classmethod
    def parse(cls, d: dict) -> User:
        return cls(d.get("uid", 0), d.get("gid", 0), d.get("umask"),
                   _list(d, "additionalGids"), d.get("username", ""))


@dataclass
class Capabilities:
    """The five capability sets, as names (an absent set is empty)."""

    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> Capabilities:
        return cls(_list(d, "bounding"), _list(d, "effective"), _list(d, "inheritable"),
                   _list(d, "permitted"), _list(d, "ambient"))


@dataclass
class Rlimit:
    type: str
    soft: int = 0
    hard: int = 0

    @classmethod
    def parse(cls, d: dict) -> Rlimit:
        return cls(d.get("type", ""), d.get("soft", 0), d.get("hard", 0))


@dataclass
class ConsoleSize:
    height: int = 0
    width: int = 0

    @classmethod
    def parse(cls, d: dict) -> ConsoleSize:
        return cls(d.get("height", 0), d.get("width", 0))


@dataclass
class Scheduler:
    policy: str | None = None                 # required (None: only in an exec's process)
    nice: int = 0
    priority: int = 0
    flags: list[str] = field(default_factory=list)
    runtime: int = 0
    deadline: int = 0
    period: int = 0

    @classmethod
    def parse(cls, d: dict) -> Scheduler:
        return cls(d.get("policy"), d.get("nice", 0), d.get("priority", 0),
                   _list(d, "flags"), d.get("runtime", 0), d.get("deadline", 0),
                   d.get("period", 0))


@dataclass
class IOPriority:
    klass: str | None = None                  # the config's "class"
    priority: int = 0

    @classmethod
    def parse(cls, d: dict) -> IOPriority:
        return cls(d.get("class"), d.get("priority", 0))


@dataclass
class ExecCPUAffinity:
    initial: str = ""                         # a CPU list; "": unchanged
    final: str = ""

    @classmethod
    def parse(cls, d: dict) -> ExecCPUAffinity:
        return cls(d.get("initial") or "", d.get("final") or "")


@dataclass
class Process:
    args: list[str] = field(default_factory=list)
    cwd: str = ""
    env: list[str] = field(default_factory=list)
    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None  # None: left as they are (see capabilities)
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    io_priority: IOPriority | None = None
    exec_cpu_affinity: ExecCPUAffinity = field(default_factory=ExecCPUAffinity)
    command_line: str = ""

    @classmethod
    def parse(cls, d: dict) -> Process:
        caps, cs, sch, iop = (d.get(k) for k in ("capabilities", "consoleSize", "scheduler",
                                                  "ioPriority"))
        return cls(
            args=list(_list(d, "args")), cwd=d.get("cwd") or "", env=list(_list(d, "env")),
            terminal=bool(d.get("terminal")),
            console_size=ConsoleSize.parse(cs) if cs is not None else None,
            user=User.parse(_dict(d, "user")),
            capabilities=Capabilities.parse(caps) if caps is not None else None,
            rlimits=[Rlimit.parse(r) for r in _list(d, "rlimits")],
            no_new_privileges=bool(d.get("noNewPrivileges")),
            apparmor_profile=d.get("apparmorProfile") or "",
            selinux_label=d.get("selinuxLabel") or "",
            oom_score_adj=d.get("oomScoreAdj"),
            scheduler=Scheduler.parse(sch) if sch is not None else None,
            io_priority=IOPriority.parse(iop) if iop is not None else None,
            exec_cpu_affinity=ExecCPUAffinity.parse(_dict(d, "execCPUAffinity")),
            command_line=d.get("commandLine") or "")


# --- root, mounts, hooks ---------------------------------------------------------------------

@dataclass
class Root:
    path: str = ""
    readonly: bool = False

    @classmethod
    def parse(cls, d: dict) -> Root:
        return cls(d.get("path") or "", bool(d.get("readonly")))


@dataclass
class IDMapping:
    container_id: int
    host_id: int
    size: int

    @classmethod
    def parse(cls, d: dict) -> IDMapping:
        return cls(d["containerID"], d["hostID"], d["size"])


@dataclass
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: list[str] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> Mount:
        return cls(d.get("destination", ""), d.get("type") or "", d.get("source") or "",
                   list(_list(d, "options")),
                   [IDMapping.parse(m) for m in _list(d, "uidMappings")],
                   [IDMapping.parse(m) for m in _list(d, "gidMappings")])


@dataclass
class Hook:
    path: str
    args: list[str] = field(default_factory=list)    # []: argv is [path]
    env: list[str] | None = None              # None: the caller's environment
    timeout: int | None = None                # seconds; None: no limit

    @classmethod
    def parse(cls, d: dict) -> Hook:
        return cls(d.get("path") or "", list(_list(d, "args")), d.get("env"),
                   d.get("timeout"))


# The hook kinds: the config's name -> Hooks' field.
HOOK_KINDS = {
    "prestart": "prestart", "createRuntime": "create_runtime",
    "createContainer": "create_container", "startContainer": "start_container",
    "poststart": "poststart", "poststop": "poststop",
}


@dataclass
class Hooks:
    prestart: list[Hook] = field(default_factory=list)
    create_runtime: list[Hook] = field(default_factory=list)
    create_container: list[Hook] = field(default_factory=list)
    start_container: list[Hook] = field(default_factory=list)
    poststart: list[Hook] = field(default_factory=list)
    poststop: list[Hook] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict | None) -> Hooks:
        """From config.json's `hooks` (or None: no hooks)."""
        if not d:
            return cls()
        return cls(**{f: [Hook.parse(h) for h in _list(d, k)] for k, f in HOOK_KINDS.items()})

    def of(self, kind: str) -> list[Hook]:
        """The hooks of a kind, by its config name ("createRuntime")."""
        return getattr(self, HOOK_KINDS[kind])


# --- linux -----------------------------------------------------------------------------------

@dataclass
class Namespace:
    type: str
    path: str | None = None                   # None: a new namespace

    @classmethod
    def parse(cls, d: dict) -> Namespace:
        return cls(d.get("type", ""), d.get("path") or None)


@dataclass
class TimeOffset:
    secs: int = 0
    nanosecs: int = 0

    @classmethod
    def parse(cls, d: dict) -> TimeOffset:
        return cls(d.get("secs", 0), d.get("nanosecs", 0))


@dataclass
class Personality:
    domain: str | None = None
    flags: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> Personality:
        return cls(d.get("domain"), list(_list(d, "flags")))


@dataclass
class SeccompArg:
    op: str
    index: int = 0                            # missing index/value: 0 (schema departure)
    value: int = 0
    value_two: int = 0

    @classmethod
    def parse(cls, d: dict) -> SeccompArg:
        return cls(d.get("op", ""), d.get("index", 0), d.get("value", 0),
                   d.get("valueTwo", 0))


@dataclass
class Syscall:
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> Syscall:
        return cls(list(_list(d, "names")), d.get("action", ""), d.get("errnoRet"),
                   [SeccompArg.parse(a) for a in _list(d, "args")])


@dataclass
class Seccomp:
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: list[Syscall] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> Seccomp:
        return cls(d.get("defaultAction", ""), d.get("defaultErrnoRet"),
                   list(_list(d, "architectures")), list(_list(d, "flags")),
                   d.get("listenerPath") or "", d.get("listenerMetadata") or "",
                   [Syscall.parse(s) for s in _list(d, "syscalls")])


@dataclass
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def parse(cls, d: dict) -> Device:
        return cls(d.get("path", ""), d.get("type", ""), d.get("major", 0),
                   d.get("minor", 0), d.get("fileMode"), d.get("uid"), d.get("gid"))


@dataclass
class MemoryPolicy:
    mode: str
    nodes: str = ""                           # a node list ("0-1,3"); "": none
    flags: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict) -> MemoryPolicy:
        return cls(d.get("mode", ""), d.get("nodes") or "", list(_list(d, "flags")))


@dataclass
class NetDevice:
    name: str = ""                            # the name in the container; "": the host's

    @classmethod
    def parse(cls, d: dict | None) -> NetDevice:
        return cls(d.get("name") or "") if d else cls()


@dataclass
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    time_offsets: dict[str, TimeOffset] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    cgroups_path: str = ""
    resources: dict | None = None             # LinuxResources as in the config (cgroups/)
    rootfs_propagation: str = ""
    seccomp: Seccomp | None = None
    sysctl: dict[str, str] = field(default_factory=dict)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    mount_label: str = ""
    personality: Personality | None = None
    intel_rdt: dict | None = None
    net_devices: dict[str, NetDevice] = field(default_factory=dict)   # by host name
    memory_policy: MemoryPolicy | None = None

    @classmethod
    def parse(cls, d: dict) -> Linux:
        sec, pers, mpol = d.get("seccomp"), d.get("personality"), d.get("memoryPolicy")
        return cls(
            namespaces=[Namespace.parse(n) for n in _list(d, "namespaces")],
            uid_mappings=[IDMapping.parse(m) for m in _list(d, "uidMappings")],
            gid_mappings=[IDMapping.parse(m) for m in _list(d, "gidMappings")],
            time_offsets={k: TimeOffset.parse(v) for k, v in _dict(d, "timeOffsets").items()
                          if v},             # an empty object: no offset for that clock
            devices=[Device.parse(x) for x in _list(d, "devices")],
            cgroups_path=d.get("cgroupsPath") or "", resources=d.get("resources"),
            rootfs_propagation=d.get("rootfsPropagation") or "",
            seccomp=Seccomp.parse(sec) if sec else None,
            sysctl=dict(_dict(d, "sysctl")),
            masked_paths=list(_list(d, "maskedPaths")),
            readonly_paths=list(_list(d, "readonlyPaths")),
            mount_label=d.get("mountLabel") or "",
            personality=Personality.parse(pers) if pers else None,
            intel_rdt=d.get("intelRdt") or None,
            net_devices={k: NetDevice.parse(v) for k, v in _dict(d, "netDevices").items()},
            memory_policy=MemoryPolicy.parse(mpol) if mpol else None)

    def namespace_paths(self) -> dict[str, str | None]:
        """{type: path, or None for a new namespace} for linux.namespaces."""
        return {ns.type: ns.path for ns in self.namespaces}


# --- the whole config ------------------------------------------------------------------------

@dataclass
class Spec:
    oci_version: str
    root: Root = field(default_factory=Root)
    process: Process | None = None            # None: no process (only `create` needs one)
    mounts: list[Mount] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks)
    hostname: str = ""
    domainname: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux = field(default_factory=Linux)
    raw: dict = field(default_factory=dict)   # the validated config.json document


def parse(doc: dict) -> Spec:
    """The records of a validated config.json document."""
    proc = doc.get("process")
    return Spec(
        oci_version=doc.get("ociVersion", ""),
        root=Root.parse(_dict(doc, "root")),
        process=Process.parse(proc) if proc is not None else None,
        mounts=[Mount.parse(m) for m in _list(doc, "mounts")],
        hooks=Hooks.parse(doc.get("hooks")),
        hostname=doc.get("hostname") or "", domainname=doc.get("domainname") or "",
        annotations=dict(_dict(doc, "annotations")),
        linux=Linux.parse(_dict(doc, "linux")), raw=doc)
