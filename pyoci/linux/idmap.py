"""Id-mapped mounts: a user namespace holding a mount's uidMappings/gidMappings, and a
detached clone of the source with MOUNT_ATTR_IDMAP set from it (or from the container's
own user namespace)."""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING
from pyoci.errors import SysError, why
from pyoci.linux import syscalls as sc

if TYPE_CHECKING:
    from pyoci.linux.mounts import Mount
    from pyoci.spec.config import IDMapping


def userns_fd(uid_mappings: list[IDMapping], gid_mappings: list[IDMapping]) -> int:
    """An fd of a new, empty user namespace with these mappings (for MOUNT_ATTR_IDMAP): a
    short-lived child unshares CLONE_NEWUSER, we write its maps, open its ns and let it go."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise SysError("idmap: helper could not create a user namespace")
        from pyoci.linux.namespaces import format_id_map

        with open(f"/proc/{pid}/uid_map", "wb", buffering=0) as f:
            f.write(format_id_map(uid_mappings))
        with open(f"/proc/{pid}/gid_map", "wb", buffering=0) as f:
            f.write(format_id_map(gid_mappings))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"idmap: user namespace for mappings: {why(e)}") from e
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def open_idmapped_tree(mnt: Mount, source: str, ns_fd: int) -> int:
    """A detached clone of source (recursive for rbind) with MOUNT_ATTR_IDMAP set from the
    user namespace ns_fd (on every submount for ridmap). Returns the tree's fd."""
    flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC
    if mnt.flags & sc.MS_REC:
        flags |= sc.AT_RECURSIVE
    try:
        tree = sc.open_tree(sc.AT_FDCWD, source, flags)
    except OSError as e:
        raise SysError(f"{mnt.where}.source: open_tree {source}: {why(e)}") from e
    try:
        sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if mnt.ridmap else 0),
                         attr_set=sc.MOUNT_ATTR_IDMAP, userns_fd=ns_fd)
    except OSError as e:
        os.close(tree)
        raise SysError(f"{mnt.where}.options: cannot id-map {source}: {why(e)}") from e
    return tree
