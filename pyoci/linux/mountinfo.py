"""The mount table: /proc/self/mountinfo parsed, the mount holding a path, and the
bookkeeping of a container without a mount namespace of its own (the mounts create made
under its rootfs, recorded by id and unmounted by id at delete).

Only `os` is imported here: the cgroup path code reads mountinfo on the hot commands."""

from __future__ import annotations

import os


def unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1:i + 4]) == 3 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(path: str = "/proc/self/mountinfo") -> list[dict]:
    """/proc/self/mountinfo as dicts: id, parent, dev, root, mountpoint, options (list),
    optional (list, e.g. ["shared:3"]), fstype, source, super_options (list)."""
    out = []
    with open(path) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a = left.split(" ")
            b = right.split(" ")
            out.append({
                "id": int(a[0]), "parent": int(a[1]), "dev": a[2], "root": unescape(a[3]),
                "mountpoint": unescape(a[4]), "options": a[5].split(","),
                "optional": [x for x in a[6:] if x], "fstype": b[0],
                "source": unescape(b[1]) if len(b) > 1 else "",
                "super_options": b[2].split(",") if len(b) > 2 else [],
            })
    return out


def mount_of(path: str, infos: list[dict]) -> dict | None:
    """The (topmost) mountinfo entry whose mountpoint is the longest prefix of path."""
    best = None
    for mi in infos:
        mp = mi["mountpoint"]
        if path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best["mountpoint"]):
                best = mi
    return best


# --- a container without a mount namespace ------------------------------------------------
# Its mounts are made in the runtime's mount namespace, under the rootfs (bound onto itself
# first, so that root.readonly & co. change that bind, never the host's mount holding the
# bundle); "/" and the rootfs' parent mount keep their propagation (runc makes the host's
# / rslave and the parent private). The runtime records the mounts that appeared under the
# rootfs during create (mount id and mountpoint) and unmounts exactly those at delete, or
# at once when create fails.


def mounts_under(rootfs: str) -> dict[int, str]:
    """Mount id -> mountpoint of every mount at or below rootfs (a real path)."""
    top = rootfs.rstrip("/") + "/"
    return {mi["id"]: mi["mountpoint"] for mi in parse_mountinfo()
            if mi["mountpoint"] == rootfs or mi["mountpoint"].startswith(top)}


def new_mounts(rootfs: str, before: dict[int, str]) -> list[list]:
    """[id, mountpoint] of the mounts below rootfs that are not in before, in mountinfo's
    order (the order they were mounted in: parents before what is mounted on them)."""
    return [[i, mp] for i, mp in mounts_under(rootfs).items() if i not in before]


def _fd_mount_id(fd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def unmount_recorded(recorded: list) -> list[str]:
    """Detach the mounts create recorded ([id, mountpoint], oldest first), newest first:
    each one only if the mount its path leads to now is still that very mount (its id, read
    from the fd that is then unmounted: a path the container changed meanwhile, through a
    symlink or a rename, reaches some other mount and is left alone). Mounts the container
    made under them go with them (MNT_DETACH). Returns the mountpoints left in place."""
    from pyoci.linux import syscalls as sc

    left = []
    for entry in reversed(recorded or []):
        try:
            mid, path = int(entry[0]), str(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        if mid not in {mi["id"] for mi in parse_mountinfo()}:
            continue                    # gone already (detached with its parent)
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            left.append(path)
            continue
        try:
            if _fd_mount_id(fd) != mid:
                left.append(path)       # covered, moved or replaced: not touched
                continue
            try:
                sc.umount2(f"/proc/self/fd/{fd}", sc.MNT_DETACH)
            except OSError:
                left.append(path)
        finally:
            os.close(fd)
    return left
