"""Build a busybox image offline, as a docker-archive tarball (the `docker save` format) that
`docker load`, `podman load` and `ctr image import` all read.

Usable as a script: python3 scripts/clients/image.py OUT.tar [NAME:TAG ...]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests"))

from support.rootfs import build_rootfs  # noqa: E402

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# name -> image config: the plain busybox image, and a pause-like sandbox image for CRI
IMAGES = {
    "localhost/busybox:test": {"Env": [PATH_ENV], "Cmd": ["sh"]},
    "localhost/pause:test": {"Env": [PATH_ENV], "Entrypoint": ["/bin/sleep", "2147483647"]},
}


def layer_tar(rootfs: str) -> bytes:
    """The rootfs as an uncompressed layer tarball, owned by root, in a stable order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = os.path.relpath(full, rootfs)
                if arc == ".pyoci-rootfs":
                    continue
                info = tar.gettarinfo(full, arc)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_archive(out: str, names: list[str] | None = None, rootfs: str | None = None) -> str:
    """Write the docker-archive at out with the images named (default: all of IMAGES)."""
    names = names or list(IMAGES)
    with tempfile.TemporaryDirectory() as tmp:
        layer = layer_tar(build_rootfs(rootfs or os.path.join(tmp, "rootfs")))
    diff_id = _sha(layer)
    manifest = []
    with tarfile.open(out, "w") as tar:
        _add(tar, f"{diff_id}/layer.tar", layer)
        for name in names:
            config = json.dumps({
                "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                "config": IMAGES[name],
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
                "history": [{"created": "1970-01-01T00:00:00Z",
                             "created_by": "pyoci scripts/clients/image.py"}],
            }, sort_keys=True).encode()
            cfg_name = f"{_sha(config)}.json"
            _add(tar, cfg_name, config)
            manifest.append({"Config": cfg_name, "RepoTags": [name],
                             "Layers": [f"{diff_id}/layer.tar"]})
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: image.py OUT.tar [NAME:TAG ...]")
    print(build_archive(sys.argv[1], sys.argv[2:] or None))
