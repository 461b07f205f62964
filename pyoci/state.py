"""Container state on disk: one 0700 directory per container under --root holding state.json
(0600, written atomically), config.json (the config as created: later edits of the bundle have
no effect), exec.fifo while the container is `created`, and a lock.

Status comes from the init process itself: its /proc/PID/stat start time must match the one
recorded at create (PID reuse), a zombie counts as stopped, exec.fifo marks `created`, a
frozen cgroup `paused`.

Built-in modules only (posix, sys, fcntl) plus pyoci.jsonio and pyoci.cgstate: `state`,
`start`, `kill`, `delete`, `pause` and `resume` (pyoci/ops) run on this module, and for them
the interpreter's start-up is most of the cost (`os` alone costs ~1.7 ms to import). The rare
cases (a cgroup that may be frozen, a directory that is not flat) import more, lazily.
"""

import posix
import sys

from pyoci import cgstate, jsonio

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

_O_RDONLY, _O_WRONLY, _O_NONBLOCK, _O_CLOEXEC = 0, 1, 0o4000, 0o2000000
_O_DIRECTORY, _O_CREAT, _O_TRUNC, _O_NOFOLLOW = 0o200000, 0o100, 0o1000, 0o400000
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000


def _env(name: str) -> str | None:
    """os.environ.get(name), without os."""
    v = posix.environ.get(name.encode())
    return None if v is None else v.decode(sys.getfilesystemencoding(), "surrogateescape")


def _error(msg: str) -> Exception:
    """PyociError(msg): pyoci.errors is imported when an error is raised, not before."""
    from pyoci.errors import PyociError

    return PyociError(msg)


def _not_found(cid: str) -> Exception:
    from pyoci.errors import ContainerNotFound

    return ContainerNotFound(cid)


# Fault points for tests (issue 11): PYOCI_FAULT="STAGE" makes pyoci SIGKILL itself when it
# reaches STAGE ("create:recorded", "exec:pid"...), "STAGE:stop" SIGSTOPs it there. Unset,
# each point costs one global lookup.
FAULT = _env("PYOCI_FAULT") or None


def fault(stage: str) -> None:
    """Trip the fault point `stage` when PYOCI_FAULT names it (call as
    `if state.FAULT: state.fault(...)`)."""
    if FAULT == stage or FAULT == stage + ":stop":
        import _signal

        posix.kill(posix.getpid(), _signal.SIGSTOP if FAULT.endswith(":stop") else
                   _signal.SIGKILL)


DEFAULT_ROOT = "/run/pyoci"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
FIFO = "exec.fifo"
PROCS_FILE = "procs"      # "pid start-time" lines: `exec`'s processes, in a cgroup not ours
MOUNTS_BEFORE = "mounts-before.json"   # a create without a mount namespace, in progress


def check_id(cid: str) -> None:
    """Letters, digits (Unicode ones too, as `\\w`), "_", "+", "-" and ".", at most 1024."""
    if not cid or cid in (".", "..") or len(cid) > 1024 \
            or not all(c.isalnum() or c in "_+-." for c in cid):
        raise _error(f"invalid container id format: {cid!r}")


def in_user_namespace() -> bool:
    """True inside a user namespace other than the initial one (runc's RunningInUserNS:
    the initial namespace maps the whole 32-bit range, "0 0 4294967295")."""
    try:
        return _read("/proc/self/uid_map").split() != [b"0", b"0", b"4294967295"]
    except OSError:
        return False


def xdg_state_root() -> str | None:
    """runc's rule for the default --root: $XDG_RUNTIME_DIR/pyoci when $XDG_RUNTIME_DIR is
    set and the caller is not root (euid 0 in a user namespace counts as not root unless
    $USER is "root"); None means DEFAULT_ROOT."""
    xdg = _env("XDG_RUNTIME_DIR")
    if not xdg:
        return None
    if posix.geteuid() != 0:
        return xdg + "/pyoci"
    if not in_user_namespace():
        return None
    return xdg + "/pyoci" if _env("USER") != "root" else None


def default_root() -> str:
    """The state root without --root: DEFAULT_ROOT, or xdg_state_root()."""
    return xdg_state_root() or DEFAULT_ROOT


def ensure_root(root: str) -> str:
    import os   # create's path imports it anyway

    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as e:
        raise _error(f"cannot create state root {root}: {e.strerror}") from None
    if root == xdg_state_root():
        # as runc: anything in $XDG_RUNTIME_DIR gets the sticky bit, so that the session's
        # periodic clean-up leaves it alone
        try:
            os.chmod(root, 0o1700)
        except OSError as e:
            raise _error(f"cannot chmod state root {root}: {e.strerror}") from None
    return root


class State:
    """What pyoci records about a container (state.json). A plain class rather than a
    pyoci.record dataclass: it is built on every lifecycle command."""

    id: str
    bundle: str
    rootfs: str
    pid: int                     # the init's host pid
    start_time: int              # init's start time in clock ticks (/proc/PID/stat field 22)
    created: str
    owner: str
    annotations: "dict[str, str]"
    oci_version: str
    cgroup: "dict[str, Any] | None"
    namespaces: "dict[str, str]"   # type -> /proc path at create
    started: bool
    # while `create` runs (status "creating"): the creating process and the bootstrap child
    # as [pid, start time], so that `state`, `list` and `delete --force` know of a container
    # whose create was killed at any point, and what it had made so far
    creating: "dict[str, Any] | None"
    dir: str
    mounts: list                 # [id, path]: made in the runtime's mount namespace (no
                                 # mount namespace of its own)

    __slots__ = ("id", "bundle", "rootfs", "pid", "start_time", "created", "owner",
                 "annotations", "oci_version", "cgroup", "namespaces", "started", "creating",
                 "dir", "mounts")

    def __init__(self, id: str, bundle: str, rootfs: str, pid: int = 0,  # noqa: A002
                 start_time: int = 0, created: str = "", owner: str = "",
                 annotations: "dict[str, str] | None" = None, oci_version: str = "1.3.0",
                 cgroup: "dict[str, Any] | None" = None,
                 namespaces: "dict[str, str] | None" = None, started: bool = False,
                 creating: "dict[str, Any] | None" = None, dir: str = "",  # noqa: A002
                 mounts: "list | None" = None) -> None:
        self.id, self.bundle, self.rootfs = id, bundle, rootfs
        self.pid, self.start_time, self.created, self.owner = pid, start_time, created, owner
        self.annotations = {} if annotations is None else annotations
        self.oci_version, self.cgroup = oci_version, cgroup
        self.namespaces = {} if namespaces is None else namespaces
        self.started, self.creating, self.dir = started, creating, dir
        self.mounts = [] if mounts is None else mounts

    def __repr__(self) -> str:
        return "State(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def to_json(self) -> dict:
        return {
            "ociVersion": self.oci_version, "id": self.id, "pid": self.pid,
            "startTime": self.start_time, "bundle": self.bundle, "rootfs": self.rootfs,
            "created": self.created, "owner": self.owner, "annotations": self.annotations,
            "cgroup": self.cgroup, "namespaces": self.namespaces, "started": self.started,
            **({"mounts": self.mounts} if self.mounts else {}),
            **({"creating": self.creating} if self.creating is not None else {}),
        }

    @classmethod
    def from_json(cls, d: dict, directory: str) -> "State":
        return cls(id=d["id"], bundle=d["bundle"], rootfs=d.get("rootfs", ""),
                   pid=d.get("pid", 0), start_time=d.get("startTime", 0),
                   created=d.get("created", ""), owner=d.get("owner", ""),
                   annotations=d.get("annotations") or {},
                   oci_version=d.get("ociVersion", "1.3.0"), cgroup=d.get("cgroup"),
                   namespaces=d.get("namespaces") or {}, started=d.get("started", False),
                   creating=d.get("creating") if isinstance(d.get("creating"), dict)
                   else None, dir=directory, mounts=d.get("mounts") or [])


def container_dir(root: str, cid: str) -> str:
    """os.path.join(root, cid) for a checked id."""
    return root + cid if root.endswith("/") or not root else f"{root}/{cid}"


def _read(path: str) -> bytes:
    fd = posix.open(path, _O_RDONLY | _O_CLOEXEC)
    try:
        return _read_fd(fd)
    finally:
        posix.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = posix.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _isdir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False


def exists(path: str) -> bool:
    """os.path.exists(path)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{posix.getpid()}"
    fd = posix.open(tmp, _O_WRONLY | _O_CREAT | _O_TRUNC | _O_CLOEXEC, mode)
    try:
        posix.write(fd, data)
    finally:
        posix.close(fd)
    posix.rename(tmp, path)


def save(st: State) -> None:
    write_atomic(f"{st.dir}/{STATE_FILE}", jsonio.dumps(st.to_json()).encode())


def read_file(path: str) -> bytes:
    """A regular file's contents, never blocking: a FIFO, socket or device in the state
    directory (put there by hand or by a crash) is refused, not waited on; a symlink is
    not followed."""
    fd = posix.open(path, _O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        if posix.fstat(fd).st_mode & _S_IFMT != _S_IFREG:
            raise IsADirectoryError(21, "not a regular file")
        return _read_fd(fd)
    finally:
        posix.close(fd)


def rmtree(path: str) -> None:
    """Remove a (flat) state directory; shutil only for anything unexpected in it."""
    try:
        for name in posix.listdir(path):
            posix.unlink(f"{path}/{name}")
        posix.rmdir(path)
    except OSError:
        try:
            posix.lstat(path)
        except OSError:
            return
        import shutil   # slow to import: only when the directory is not flat

        shutil.rmtree(path, ignore_errors=True)


# state.json fields: (key, types); "pid"/"startTime" are non-negative integers
_STATE_TYPES = (("id", str), ("bundle", str), ("rootfs", str), ("created", str),
                ("owner", str), ("ociVersion", str), ("annotations", dict),
                ("cgroup", dict), ("namespaces", dict), ("started", bool))


# written as strings, never null (cgroup, annotations and namespaces may be null)
_STATE_STRINGS = ("id", "bundle", "rootfs", "created", "owner", "ociVersion", "started")


def check_state_doc(doc: object, cid: str) -> dict:
    """state.json as pyoci writes it, or PyociError naming the first wrong field (a corrupt
    or hand-edited file must not reach the code that signals or removes things)."""
    bad = f"container {cid}: corrupt state.json"
    if not isinstance(doc, dict):
        raise _error(f"{bad}: not an object")
    for key in ("id", "bundle"):
        if key not in doc:
            raise _error(f"{bad}: {key}: missing")
    for key, typ in _STATE_TYPES:
        v = doc.get(key)
        if (v is not None or key in _STATE_STRINGS and key in doc) and not isinstance(v, typ):
            raise _error(f"{bad}: {key}: must be a {typ.__name__}")
    for key in ("pid", "startTime"):
        v = doc.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63:
            raise _error(f"{bad}: {key}: must be a non-negative integer")
    for key in ("annotations", "namespaces"):
        for k, v in (doc.get(key) or {}).items():
            if not isinstance(v, str):
                raise _error(f"{bad}: {key}.{k}: must be a string")
    why = cgstate.problem(doc["cgroup"]) if doc.get("cgroup") is not None else None
    if why:
        raise _error(f"{bad}: cgroup.{why}")
    if doc["id"] != cid:
        raise _error(f"{bad}: id: {doc['id']!r} is not the directory's")
    return doc


def load(root: str, cid: str) -> State:
    check_id(cid)
    d = container_dir(root, cid)
    try:
        doc = jsonio.loads(read_file(f"{d}/{STATE_FILE}"))
    except FileNotFoundError:
        if _isdir(d):            # `create` made the directory, not yet its state.json
            return State(id=cid, bundle="", rootfs="", creating={}, dir=d)
        raise _not_found(cid) from None
    except PermissionError as e:
        raise _error(denied(e.filename or d)) from None
    except OSError as e:
        raise _error(f"container {cid}: cannot read state.json: "
                         f"{e.strerror or e}") from None
    except (ValueError, RecursionError):
        raise _error(f"container {cid}: corrupt state.json") from None
    return State.from_json(check_state_doc(doc, cid), d)


def denied(path: str) -> str:
    """The message for a state file or directory this user may not read (runc:
    "lstat /run/runc/ID: permission denied")."""
    if posix.geteuid() != 0:
        return (f"{path}: permission denied (the state directory belongs to root: run as root, "
                "or use --root for a directory of your own)")
    return f"{path}: permission denied"


def config_bytes(st: State) -> bytes:
    """config.json of the state directory, unparsed (StateFileError if unreadable)."""
    try:
        return read_file(f"{st.dir}/{CONFIG_FILE}")
    except OSError as e:
        from pyoci.errors import StateFileError

        raise StateFileError(f"container {st.id}: cannot read its config.json: "
                             f"{e.strerror or e}") from None


def load_config(st: State, data: bytes | None = None) -> dict:
    """The config as created (config.json in the state directory; `data`: its bytes, when
    already read)."""
    try:
        doc = jsonio.loads(config_bytes(st) if data is None else data)
    except (ValueError, RecursionError) as e:
        from pyoci.errors import StateFileError

        if isinstance(e, StateFileError):
            raise
        doc = None
    if not isinstance(doc, dict):
        from pyoci.errors import StateFileError

        raise StateFileError(f"container {st.id}: corrupt config.json in its state directory")
    return doc


def config_hooks(st: State, name: bytes) -> dict | None:
    """The stored config's hooks when it has `name` ("poststart", "poststop") hooks, else
    None; an unreadable config has none. The config is parsed only when its text may name
    them (literally, or behind a \\u escape): start and delete must stay cheap."""
    try:
        data = config_bytes(st)
    except ValueError:            # StateFileError: unreadable
        return None
    if name not in data and b"\\u" not in data:
        return None
    hooks = load_config(st, data).get("hooks") or {}
    return hooks if isinstance(hooks, dict) and hooks.get(name.decode()) else None


class Lock:
    """An exclusive flock on the container directory, held for one command."""

    def __init__(self, directory: str, shared: bool = False):
        self.directory = directory
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> "Lock":
        import fcntl

        try:
            self.fd = posix.open(self.directory, _O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except FileNotFoundError:
            raise _not_found(self.directory.rpartition("/")[2]) from None
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        if posix.fstat(self.fd).st_nlink == 0:   # deleted while we waited for the lock
            posix.close(self.fd)
            raise _not_found(self.directory.rpartition("/")[2])
        return self

    def __exit__(self, *exc: object) -> None:
        posix.close(self.fd)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (the state letter first, the
    start time at [19]), or None if pid is gone."""
    try:
        data = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of pid from /proc/PID/stat, or None if it is gone."""
    rest = stat_fields(pid)
    return None if rest is None else (rest[0].decode(), int(rest[19]))


def init_alive(st: State) -> bool:
    """The recorded init is still alive: same start time (not a reused PID), not a zombie."""
    if st.pid <= 0:
        return False
    ps = proc_stat(st.pid)
    if ps is None:
        return False
    letter, start = ps
    return start == st.start_time and letter not in ("Z", "X", "x")


def alive(rec: object) -> bool:
    """A [pid, start time] record names a live process (not a zombie, not a reused pid)."""
    if not isinstance(rec, list) or len(rec) != 2:
        return False
    ps = proc_stat(rec[0]) if isinstance(rec[0], int) and rec[0] > 0 else None
    return ps is not None and ps[1] == rec[1] and ps[0] not in ("Z", "X", "x")


def wait_dead(pid: int, start_time: int, timeout: float) -> bool:
    """Wait until pid is gone or a zombie (or another process with a new start time)."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        ps = proc_stat(pid)
        if ps is None or ps[0] in ("Z", "X", "x") or (start_time and ps[1] != start_time):
            try:
                posix.waitpid(pid, 1)   # WNOHANG: reap it if it is ours (run, tests)
            except ChildProcessError:
                pass
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _locked(directory: str) -> bool:
    """Someone holds the container directory's lock (`create` does, all along)."""
    import fcntl

    try:
        fd = posix.open(directory, _O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        posix.close(fd)
    return False


def creating_status(st: State) -> str:
    """A container whose `create` has not finished: "creating" while the creating process,
    its bootstrap child or the init lives (a killed create leaves a container that only
    `delete --force` removes), "stopped" once nothing of it runs."""
    c = st.creating or {}
    if not c:                              # no state.json yet: is its create still running?
        return "creating" if _locked(st.dir) else "stopped"
    if alive(c.get("creator")) or alive(c.get("bootstrap")) or init_alive(st):
        return "creating"
    return "stopped"


def stopped(st: State) -> bool:
    """status(st) == "stopped", without asking the cgroup whether it is frozen."""
    if st.creating is not None:
        return creating_status(st) == "stopped"
    return not init_alive(st)


def status(st: State) -> str:
    if st.creating is not None:
        return creating_status(st)
    if not init_alive(st):
        return "stopped"
    if st.cgroup and frozen(st.cgroup):   # frozen wins over created, as with runc
        return "paused"
    if exists(f"{st.dir}/{FIFO}"):
        return "created"
    return "running"


def frozen(cg: dict) -> bool:
    """The cgroup driver's frozen() (any error: not frozen); its files are read here when
    they answer plainly (cgstate), the driver asked otherwise."""
    if not cgstate.maybe_frozen(cg):
        return False
    found = cgstate.freezer_dir(cg)
    plain = cgstate.plain_frozen(*found) if found else None
    if plain is not None:
        return plain
    from pyoci import cgroups

    try:
        return cgroups.from_state(cg).frozen()
    except Exception:  # noqa: BLE001 - a cgroup that cannot answer is not paused
        return False


def public_state(st: State, stat: str) -> dict:
    """The state JSON `pyoci state` prints and hooks receive (runtime-spec State + runc's)."""
    d = {
        "ociVersion": st.oci_version, "id": st.id,
        "pid": st.pid if stat != "stopped" else 0,
        "status": stat, "bundle": st.bundle, "rootfs": st.rootfs,
        "created": st.created, "owner": st.owner,
    }
    if st.annotations:
        d["annotations"] = st.annotations
    return d


def list_ids(root: str) -> list[str]:
    try:
        names = posix.listdir(root)
    except FileNotFoundError:
        return []
    except PermissionError:
        raise _error(denied(root)) from None
    # a directory without state.json: a create that has just begun, or was killed then
    return sorted(n for n in names if _isdir(container_dir(root, n)))
