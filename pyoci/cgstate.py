"""The shape of the "cgroup" object of state.json, as the cgroup drivers' to_state() write it
(pyoci.cgroups v1, v2 and systemd): checked when a state.json is read, by pyoci.state (which
reports the field) and by pyoci.fastpath (which falls back), so that a corrupt or hand-edited
file never reaches the code that freezes, signals or removes cgroups. Built-ins only: the
fast path imports it."""


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
