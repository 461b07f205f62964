"""Container state on disk: one 0700 directory per container under --root holding state.json
(0600, written atomically), config.json (the config as created: later edits of the bundle have
no effect), exec.fifo while the container is `created`, and a lock.

Status comes from the init process itself: its /proc/PID/stat start time must match the one
recorded at create (PID reuse), a zombie counts as stopped, exec.fifo marks `created`.
"""

from __future__ import annotations

import fcntl
import os

from pyoci import cgstate, jsonio
from pyoci.record import dataclass, field

from pyoci.errors import ContainerNotFound, PyociError
from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Fault points for tests (issue 11): PYOCI_FAULT="STAGE" makes pyoci SIGKILL itself when it
# reaches STAGE ("create:recorded", "exec:pid"...), "STAGE:stop" SIGSTOPs it there. Unset,
# each point costs one global lookup.
FAULT = os.environ.get("PYOCI_FAULT") or None


def fault(stage: str) -> None:
    """Trip the fault point `stage` when PYOCI_FAULT names it (call as
    `if state.FAULT: state.fault(...)`)."""
    if FAULT == stage or FAULT == stage + ":stop":
        import _signal

        os.kill(os.getpid(), _signal.SIGSTOP if FAULT.endswith(":stop") else _signal.SIGKILL)


DEFAULT_ROOT = "/run/pyoci"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
FIFO = "exec.fifo"
PROCS_FILE = "procs"      # "pid start-time" lines: `exec`'s processes, in a cgroup not ours


def check_id(cid: str) -> None:
    """Letters, digits (Unicode ones too, as `\\w`), "_", "+", "-" and ".", at most 1024."""
    if not cid or cid in (".", "..") or len(cid) > 1024 \
            or not all(c.isalnum() or c in "_+-." for c in cid):
        raise PyociError(f"invalid container id format: {cid!r}")


def in_user_namespace() -> bool:
    """True inside a user namespace other than the initial one (runc's RunningInUserNS:
    the initial namespace maps the whole 32-bit range, "0 0 4294967295")."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def xdg_state_root() -> str | None:
    """runc's rule for the default --root: $XDG_RUNTIME_DIR/pyoci when $XDG_RUNTIME_DIR is
    set and the caller is not root (euid 0 in a user namespace counts as not root unless
    $USER is "root"); None means /run/pyoci. pyoci.fastpath mirrors it (_default_root)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg:
        return None
    if os.geteuid() != 0:
        return xdg + "/pyoci"
    if not in_user_namespace():
        return None
    return xdg + "/pyoci" if os.environ.get("USER", "") != "root" else None


def default_root() -> str:
    return xdg_state_root() or DEFAULT_ROOT


def ensure_root(root: str) -> str:
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as e:
        raise PyociError(f"cannot create state root {root}: {e.strerror}") from None
    if root == xdg_state_root():
        # as runc: anything in $XDG_RUNTIME_DIR gets the sticky bit, so that the session's
        # periodic clean-up leaves it alone
        try:
            os.chmod(root, 0o1700)
        except OSError as e:
            raise PyociError(f"cannot chmod state root {root}: {e.strerror}") from None
    return root


@dataclass
class State:
    """What pyoci records about a container (state.json)."""

    id: str
    bundle: str
    rootfs: str
    pid: int = 0
    start_time: int = 0            # init's start time in clock ticks (/proc/PID/stat field 22)
    created: str = ""
    owner: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    oci_version: str = "1.3.0"
    cgroup: dict[str, Any] | None = None
    namespaces: dict[str, str] = field(default_factory=dict)   # type -> /proc path at create
    started: bool = False
    # while `create` runs (status "creating"): the creating process and the bootstrap child
    # as [pid, start time], so that `state`, `list` and `delete --force` know of a container
    # whose create was killed at any point, and what it had made so far
    creating: dict[str, Any] | None = None
    dir: str = ""
    mounts: list = field(default_factory=list)   # [id, path]: made in the runtime's mount
                                                 # namespace (no mount namespace of its own)

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
    def from_json(cls, d: dict, directory: str) -> State:
        return cls(id=d["id"], bundle=d["bundle"], rootfs=d.get("rootfs", ""),
                   pid=d.get("pid", 0), start_time=d.get("startTime", 0),
                   created=d.get("created", ""), owner=d.get("owner", ""),
                   annotations=d.get("annotations") or {},
                   oci_version=d.get("ociVersion", "1.3.0"), cgroup=d.get("cgroup"),
                   namespaces=d.get("namespaces") or {}, started=d.get("started", False),
                   creating=d.get("creating") if isinstance(d.get("creating"), dict)
                   else None, dir=directory, mounts=d.get("mounts") or [])


def container_dir(root: str, cid: str) -> str:
    return os.path.join(root, cid)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def save(st: State) -> None:
    write_atomic(os.path.join(st.dir, STATE_FILE), jsonio.dumps(st.to_json()).encode())


def read_file(path: str) -> bytes:
    """A regular file's contents, never blocking: a FIFO, socket or device in the state
    directory (put there by hand or by a crash) is refused, not waited on; a symlink is
    not followed."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(21, "not a regular file")
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


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
        raise PyociError(f"{bad}: not an object")
    for key in ("id", "bundle"):
        if key not in doc:
            raise PyociError(f"{bad}: {key}: missing")
    for key, typ in _STATE_TYPES:
        v = doc.get(key)
        if (v is not None or key in _STATE_STRINGS and key in doc) and not isinstance(v, typ):
            raise PyociError(f"{bad}: {key}: must be a {typ.__name__}")
    for key in ("pid", "startTime"):
        v = doc.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63:
            raise PyociError(f"{bad}: {key}: must be a non-negative integer")
    for key in ("annotations", "namespaces"):
        for k, v in (doc.get(key) or {}).items():
            if not isinstance(v, str):
                raise PyociError(f"{bad}: {key}.{k}: must be a string")
    why = cgstate.problem(doc["cgroup"]) if doc.get("cgroup") is not None else None
    if why:
        raise PyociError(f"{bad}: cgroup.{why}")
    if doc["id"] != cid:
        raise PyociError(f"{bad}: id: {doc['id']!r} is not the directory's")
    return doc


def load(root: str, cid: str) -> State:
    check_id(cid)
    d = container_dir(root, cid)
    try:
        doc = jsonio.loads(read_file(os.path.join(d, STATE_FILE)))
    except FileNotFoundError:
        if os.path.isdir(d):     # `create` made the directory, not yet its state.json
            return State(id=cid, bundle="", rootfs="", creating={}, dir=d)
        raise ContainerNotFound(cid) from None
    except PermissionError as e:
        raise PyociError(denied(e.filename or d)) from None
    except OSError as e:
        raise PyociError(f"container {cid}: cannot read state.json: "
                         f"{e.strerror or e}") from None
    except (ValueError, RecursionError):
        raise PyociError(f"container {cid}: corrupt state.json") from None
    return State.from_json(check_state_doc(doc, cid), d)


class StateFileError(PyociError, ValueError):
    """A file in the state directory is unreadable or corrupt (a ValueError too: callers
    that can do without the file catch it as they catch a JSON error)."""


def denied(path: str) -> str:
    """The message for a state file or directory this user may not read (runc:
    "lstat /run/runc/ID: permission denied")."""
    if os.geteuid() != 0:
        return (f"{path}: permission denied (the state directory belongs to root: run as root, "
                "or use --root for a directory of your own)")
    return f"{path}: permission denied"


def load_config(st: State) -> dict:
    """The config as created (config.json in the state directory)."""
    try:
        doc = jsonio.loads(read_file(os.path.join(st.dir, CONFIG_FILE)))
    except OSError as e:
        raise StateFileError(f"container {st.id}: cannot read its config.json: "
                             f"{e.strerror or e}") from None
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise StateFileError(f"container {st.id}: corrupt config.json in its state directory")
    return doc


class Lock:
    """An exclusive flock on the container directory, held for one command."""

    def __init__(self, directory: str, shared: bool = False):
        self.directory = directory
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> Lock:
        try:
            self.fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(os.path.basename(self.directory)) from None
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        if os.fstat(self.fd).st_nlink == 0:   # deleted while we waited for the lock
            os.close(self.fd)
            raise ContainerNotFound(os.path.basename(self.directory))
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (the state letter first, the
    start time at [19]), or None if pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
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


def _alive(rec: object) -> bool:
    """A [pid, start time] record names a live process (not a zombie, not a reused pid)."""
    if not isinstance(rec, list) or len(rec) != 2:
        return False
    ps = proc_stat(rec[0]) if isinstance(rec[0], int) and rec[0] > 0 else None
    return ps is not None and ps[1] == rec[1] and ps[0] not in ("Z", "X", "x")


def _locked(directory: str) -> bool:
    """Someone holds the container directory's lock (`create` does, all along)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def creating_status(st: State) -> str:
    """A container whose `create` has not finished: "creating" while the creating process,
    its bootstrap child or the init lives (a killed create leaves a container that only
    `delete --force` removes), "stopped" once nothing of it runs."""
    c = st.creating or {}
    if not c:                              # no state.json yet: is its create still running?
        return "creating" if _locked(st.dir) else "stopped"
    if _alive(c.get("creator")) or _alive(c.get("bootstrap")) or init_alive(st):
        return "creating"
    return "stopped"


def status(st: State) -> str:
    if st.creating is not None:
        return creating_status(st)
    if not init_alive(st):
        return "stopped"
    if st.cgroup:             # frozen wins over created, as with runc
        from pyoci import cgroups

        try:
            if cgroups.from_state(st.cgroup).frozen():
                return "paused"
        except Exception:
            pass
    if os.path.exists(os.path.join(st.dir, FIFO)):
        return "created"
    return "running"


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
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except PermissionError:
        raise PyociError(denied(root)) from None
    # a directory without state.json: a create that has just begun, or was killed then
    return sorted(n for n in names if os.path.isdir(os.path.join(root, n)))
