"""The shape of the "cgroup" object of state.json, as the cgroup drivers' to_state() write it
(pyoci.cgroups v1, v2 and systemd): checked when pyoci.state reads a state.json (it reports
the field), so that a corrupt or hand-edited file never reaches the code that freezes, signals
or removes cgroups; and the cgroupfs files the lifecycle commands read or write themselves
where the drivers' answer is plain (the freezer: pyoci/ops/pause.py; the directories create
made: pyoci/ops/delete.py). Built-in modules only: every lifecycle command imports it."""

import posix

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from pyoci.cgroups.base import Manager
    from pyoci.state import State

_O_RDONLY, _O_WRONLY, _O_CLOEXEC = 0, 1, 0o2000000


def _path(v: object) -> bool:
    return isinstance(v, str) and v.startswith("/")


def _paths(v: object) -> bool:
    return isinstance(v, list) and all(_path(x) for x in v)


def problem(cg: dict) -> str | None:
    """None when `cg` has a driver's shape, else "FIELD: what is wrong" (FIELD under
    "cgroup", e.g. "paths: must map controllers to absolute paths")."""
    driver = cg.get("driver")
    if "created" in cg and cg["created"] is not None and not _paths(cg["created"]):
        return "created: must be a list of absolute paths"
    if "mountpoint" in cg and not _path(cg["mountpoint"]):
        return "mountpoint: must be an absolute path"
    if driver == "v1":
        paths = cg.get("paths")
        if paths is not None and not (isinstance(paths, dict)
                                      and all(_path(v) for v in paths.values())):
            return "paths: must map controllers to absolute paths"
        if cg.get("unified") is not None and not _path(cg["unified"]):
            return "unified: must be an absolute path"
        return None
    if driver == "v2":
        if not _path(cg.get("path")):
            return "path: must be an absolute path"
        return None
    if driver == "systemd":
        if not isinstance(cg.get("id"), str):
            return "id: must be a string"
        if cg.get("cgroupsPath") is not None and not isinstance(cg["cgroupsPath"], str):
            return "cgroupsPath: must be a string"
        fs = cg.get("fs")
        if fs is None or fs == {}:
            return None
        if not isinstance(fs, dict) or fs.get("driver") not in ("v1", "v2"):
            return "fs: must be a v1 or v2 cgroup state"
        why = problem(fs)
        return f"fs.{why}" if why else None
    return "driver: must be v1, v2 or systemd"


def read_opt(path: str) -> str | None:
    """A cgroup file's contents, stripped (None if it does not exist)."""
    try:
        fd = posix.open(path, _O_RDONLY | _O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return posix.read(fd, 65536).decode().strip()
    finally:
        posix.close(fd)


def write(path: str, value: str) -> None:
    """Write a cgroup file (OSError as the kernel answers)."""
    fd = posix.open(path, _O_WRONLY | _O_CLOEXEC)
    try:
        posix.write(fd, value.encode())
    finally:
        posix.close(fd)


def maybe_frozen(cg: dict) -> bool:
    """False when the container's cgroup is certainly not frozen (what the drivers'
    frozen() would answer); True when only the driver can tell."""
    try:
        driver = cg.get("driver")
        if driver == "v1":
            freezer = (cg.get("paths") or {}).get("freezer")
            if freezer:
                return read_opt(freezer + "/freezer.state") not in (None, "THAWED")
            if cg.get("unified"):
                return not events_say(cg["unified"], "frozen 0", missing=True)
            return False
        if driver == "v2":
            return read_opt(cg["path"] + "/cgroup.freeze") == "1"
    except (OSError, TypeError, AttributeError, KeyError, UnicodeError):
        pass
    return True


def events_say(path: str, line: str, missing: bool = False) -> bool:
    """cgroup.events in the directory `path` has this line (`missing` if no such file)."""
    events = read_opt(path + "/cgroup.events")
    return missing if events is None else line in events.splitlines()


def freezer(cg: object) -> tuple[str, str] | None:
    """("v1", the freezer directory) or ("v2", the cgroup directory) of a cgroupfs state
    whose freezer pyoci created; None for anything else (no cgroup, systemd, a hybrid
    container frozen through cgroup2 only, a cgroup pyoci did not create): the driver's."""
    found = freezer_dir(cg)
    if found is None or not isinstance(cg, dict):
        return None
    created = cg.get("created")
    return found if isinstance(created, list) and found[1] in created else None


def freezer_dir(cg: object) -> tuple[str, str] | None:
    """freezer() whoever created the cgroup: where its freezer state can be read."""
    if not isinstance(cg, dict):
        return None
    if cg.get("driver") == "v1":
        paths = cg.get("paths")
        path = paths.get("freezer") if isinstance(paths, dict) else None
    elif cg.get("driver") == "v2":
        path = cg.get("path")
    else:
        return None
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    return cg["driver"], path


def plain_frozen(kind: str, path: str) -> bool | None:
    """The driver's frozen() where its answer is plain: THAWED / self-FROZEN (v1), "0" /
    "1" with "frozen 1" (v2); None for anything else (FREEZING, a frozen parent, a file
    missing or unreadable)."""
    try:
        if kind == "v1":
            state = read_opt(path + "/freezer.state")
            if state == "THAWED":
                return False
            if state == "FROZEN" and read_opt(path + "/freezer.self_freezing") == "1":
                return True
        else:
            freeze = read_opt(path + "/cgroup.freeze")
            if freeze == "0":
                return False
            if freeze == "1" and events_say(path, "frozen 1"):
                return True
    except (OSError, UnicodeError):
        pass
    return None


def plain_dirs(cg: dict) -> bool:
    """A cgroupfs state whose every cgroup pyoci created (the drivers' owned()) and whose
    directories delete may rmdir itself (the drivers' destroy() for an empty cgroup)."""
    created = cg.get("created")
    if not isinstance(created, list) or not all(isinstance(x, str) and x.startswith("/")
                                                for x in created):
        return False
    if not (cg.get("driver") == "v1" and isinstance(cg.get("paths"), dict)
            or cg.get("driver") == "v2" and isinstance(cg.get("path"), str)):
        return False
    return all(leaf in created for leaf in leaves(cg))


def leaves(cg: dict) -> list[str]:
    """The container's own cgroup directories of a cgroupfs state (the drivers' leaves())."""
    if cg.get("driver") == "v1" and isinstance(cg.get("paths"), dict):
        out = list(cg["paths"].values())
        if cg.get("unified"):
            out.append(cg["unified"])
        return out
    if cg.get("driver") == "v2" and isinstance(cg.get("path"), str):
        return [cg["path"]]
    return []


def manager(st: "State", what: str) -> "Manager":
    """The cgroup driver's manager of the container (`what`: the command, for errors):
    pause, resume, update, events and ps act through it."""
    if not st.cgroup and st.creating is not None:
        # no state.json (yet or any more): a create under way, or a delete that raced us
        from pyoci.errors import StateError

        raise StateError(f"{what}: container {st.id} is being created or deleted")
    if not st.cgroup:
        from pyoci.errors import UnsupportedError

        raise UnsupportedError(f"{what}: container {st.id} has no cgroup (a rootless "
                               "container whose user could not create one: this needs "
                               "root or a delegated cgroup)")
    from pyoci import cgroups

    return cgroups.from_state(st.cgroup)
