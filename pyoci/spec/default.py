"""`pyoci spec`: a default config.json like runc's (and the --rootless variant)."""

from __future__ import annotations

import os

from pyoci import SPEC_VERSION, jsonio
from pyoci.errors import PyociError

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False) -> dict:
    spec = {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyoci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                 "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        to_rootless(spec)
    return spec


def to_rootless(spec: dict) -> None:
    """runc's specconv.ToRootless: no network namespace, a new user namespace (last) mapping
    root to the caller's uid and gid, /sys bind-mounted from the host instead of a sysfs
    (an unprivileged user cannot mount one without a network namespace of its own), no
    uid=/gid= mount options (unmapped ids), no linux.resources."""
    old = spec["linux"]
    linux = {"uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
             "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}]}
    linux.update((k, v) for k, v in old.items() if k != "resources")
    linux["namespaces"] = [ns for ns in old["namespaces"]
                           if ns["type"] not in ("network", "user")] + [{"type": "user"}]
    spec["linux"] = linux
    mounts = []
    for m in spec["mounts"]:
        if m["destination"].rstrip("/") == "/sys":
            m = {"destination": "/sys", "type": "none", "source": "/sys",
                 "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        elif "options" in m:
            m["options"] = [o for o in m["options"]
                            if not o.startswith(("gid=", "uid="))]
        mounts.append(m)
    spec["mounts"] = mounts


def write_spec(bundle: str, rootless: bool = False) -> None:
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise PyociError(f"File {path} exists. Remove it first")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise PyociError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(tab_indented(default_spec(rootless)) + "\n")


def tab_indented(doc: dict) -> str:
    """json.dumps(doc, indent="\\t") through pyoci.jsonio (json costs milliseconds to
    import): indented by one space per level, each line's leading spaces then become tabs
    (JSON text has no raw newline inside a string, so every line starts with its indent)."""
    lines = jsonio.dumps(doc, indent=1).split("\n")
    return "\n".join("\t" * (len(ln) - len(ln.lstrip(" "))) + ln.lstrip(" ") for ln in lines)
