"""AppArmor: the profile is applied on exec by writing `exec <profile>` to the LSM's attr file.
Where AppArmor is not enabled, a requested profile is an error, as with runc (which fails at
init when the attr write is refused); pyoci reports it before anything is created."""

from __future__ import annotations

import os

from pyoci.errors import SysError, UnsupportedError

ENABLED = "/sys/module/apparmor/parameters/enabled"


def is_enabled() -> bool:
    try:
        with open(ENABLED, "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def check(profile: str | None, field: str = "process.apparmorProfile") -> None:
    if profile and not is_enabled():
        raise UnsupportedError(f"{field}: AppArmor is not enabled on this host "
                               f"(cannot apply profile {profile!r})")


def apply_on_exec(profile: str | None) -> None:
    """Make the next execve of this process enter profile."""
    if not profile:
        return
    data = f"exec {profile}".encode()
    for path in ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"):
        if not os.path.exists(path):
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        except OSError as e:
            raise SysError(f"process.apparmorProfile: cannot apply {profile!r}: "
                           f"{e.strerror}") from None
    raise SysError(f"process.apparmorProfile: cannot apply {profile!r}: no LSM attr file")
