"""`pyoci features`: the runtime-spec v1.3.0 Features structure, stated truthfully."""

from __future__ import annotations

from pyoci import SPEC_VERSION

MOUNT_OPTIONS = [
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "idmap",
    "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec",
    "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
    "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime", "relatime", "remount",
    "rexec", "ridmap", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime",
    "rnostrictatime", "rnosuid", "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw",
    "rshared", "rslave", "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared",
    "silent", "slave", "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable",
]
HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop"]
NAMESPACES = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]


def _cgroup_facts() -> dict:
    import os

    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    unified = os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers")
    v1 = not v2 and os.path.isdir("/sys/fs/cgroup/memory")
    rdma = os.path.isdir("/sys/fs/cgroup/rdma")   # the v1 controller, or v2's when offered
    if v2:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            rdma = "rdma" in f.read().split()
    return {"v1": v1, "v2": v2 or unified, "systemd": os.path.isdir("/run/systemd/system"),
            "systemdUser": False, "rdma": rdma}


def features() -> dict:
    from pyoci.linux import capabilities, seccomp

    from pyoci.linux import apparmor, mempolicy

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": capabilities.names(),
            "cgroup": _cgroup_facts(),
            "seccomp": {
                "enabled": True,
                "actions": sorted(seccomp.ACTIONS),
                "operators": sorted(seccomp.OPERATORS),
                "archs": sorted(seccomp.ARCHITECTURES),
                "knownFlags": sorted(seccomp.FLAGS),
                "supportedFlags": sorted(seccomp.FLAGS),
            },
            "apparmor": {"enabled": apparmor.is_enabled()},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},
            "memoryPolicy": {"enabled": True, "modes": sorted(mempolicy.MODES),
                             "flags": sorted(mempolicy.FLAGS)},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false",
                        "io.github.pyoci.version": __import__("pyoci").__version__},
    }
