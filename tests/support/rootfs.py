"""Build a busybox-static root filesystem and OCI bundles offline, for tests and the demo.

Usable as a script: python3 tests/support/rootfs.py BUNDLE_DIR [ARGS...] writes
BUNDLE_DIR/rootfs and a config.json running ARGS (default: sh).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
users:x:100:user
audio:x:29:user
nogroup:x:65534:
user:x:1000:
"""


def build_rootfs(dest: str) -> str:
    """Make a busybox rootfs at dest (idempotent); returns dest."""
    if os.path.exists(os.path.join(dest, ".pyoci-rootfs")):
        return dest
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root",
              "home/user", "var", "run", "mnt"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for a in applets:
        p = os.path.join(dest, a)
        if os.path.lexists(p) or a.endswith("/busybox"):
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink("/bin/busybox", p)
    with open(os.path.join(dest, "etc/passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(dest, "etc/group"), "w") as f:
        f.write(GROUP)
    with open(os.path.join(dest, "etc/hostname"), "w") as f:
        f.write("rootfs\n")
    open(os.path.join(dest, ".pyoci-rootfs"), "w").close()
    return dest


def base_config(args: list[str] | None = None, terminal: bool = False) -> dict:
    """`pyoci spec`'s default config (runc's), running args, without a terminal, a cgroup
    namespace or the /sys/fs/cgroup mount (the tests add what they need)."""
    from pyoci.spec.default import default_spec

    cfg = default_spec()
    cfg["process"]["terminal"] = terminal
    cfg["process"]["args"] = args or ["sh"]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                  if n["type"] != "cgroup"]
    return cfg


def make_bundle(bundle: str, config: dict | None = None, rootfs_cache: str | None = None,
                args: list[str] | None = None) -> str:
    """Write bundle/config.json and bundle/rootfs (copied from rootfs_cache if given)."""
    os.makedirs(bundle, exist_ok=True)
    rootfs = os.path.join(bundle, "rootfs")
    if rootfs_cache:
        if not os.path.exists(rootfs):
            subprocess.run(["cp", "-a", rootfs_cache, rootfs], check=True)
    else:
        build_rootfs(rootfs)
    cfg = copy.deepcopy(config) if config is not None else base_config(args)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return bundle


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: rootfs.py BUNDLE_DIR [ARGS...]")
    make_bundle(sys.argv[1], args=sys.argv[2:] or None)
    print(sys.argv[1])
