"""The full-kernel test lane: build a Debian kernel + busybox initramfs and boot it under QEMU.

Shared by lane/build, lane/run and lane/ci. Everything downloaded or generated lives under
lane/cache/ (git-ignored). Host tools used: apt-get, apt-cache, dpkg, qemu-system-x86_64 and the
static busybox from busybox-static.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys

LANE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(LANE)
CACHE = os.path.join(LANE, "cache")
GUEST = os.path.join(LANE, "guest")

# The kernel this lane was measured with; when it leaves the archive, the build falls back to
# whatever linux-image-amd64 depends on.
KERNEL_PIN = "linux-image-6.1.0-56-amd64"
KERNEL_META = "linux-image-amd64"
APPARMOR_PKG = "apparmor"
BUSYBOX = "/bin/busybox"
QBOOT = "/usr/share/qemu/qboot.rom"

# Load order matters: insmod does not resolve dependencies.
MODULES = ["virtio", "virtio_ring", "virtio_mmio", "virtio_pci_modern_dev",
           "virtio_pci_legacy_dev", "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "fscache",
           "9p", "overlay", "loop",
           # CRIU (pyoci checkpoint/restore, tests/lane/test_checkpoint.py): `criu check`
           # needs veth and nf_tables (libcrc32c: softdep crc32c), its network lock
           # iptables-nft's mark match, dumping a network namespace conntrack's netlink
           # (without it nfnetlink answers EINVAL), dumping sockets the sock_diag modules
           "veth", "tun", "crc32c_generic", "nf_tables", "nft_compat", "xt_mark",
           "nf_conntrack_netlink",
           "unix_diag", "inet_diag", "tcp_diag", "udp_diag", "raw_diag", "netlink_diag",
           "af_packet_diag"]

# Parts of the apparmor package the guest needs (the rest is docs, init scripts and units).
APPARMOR_KEEP = ("etc/apparmor", "etc/apparmor.d", "usr/sbin", "usr/bin", "usr/lib/apparmor",
                 "usr/share/apparmor-features", "var/cache/apparmor")

CMDLINE = ("console=ttyS0 quiet panic=-1 apparmor=1 security=apparmor cgroup_no_v1=all "
           "systemd.unified_cgroup_hierarchy=1 lpj=8400000 mitigations=off tsc=reliable "
           "cryptomgr.notests=1 pci=noacpi")

MODSIG_MAGIC = b"~Module signature appended~\n"


def log(msg: str) -> None:
    print(f"lane: {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(argv, **kw)


def artifacts() -> dict[str, str]:
    """Paths of the build outputs lane/run needs."""
    return {"vmlinux": os.path.join(CACHE, "vmlinux"),
            "initramfs": os.path.join(CACHE, "initramfs.cpio"),
            "manifest": os.path.join(CACHE, "manifest.json")}


def apt_candidate(pkg: str) -> str | None:
    """The candidate version apt would install for pkg, or None if it has none."""
    r = run(["apt-cache", "policy", pkg], capture_output=True, text=True, check=False)
    m = re.search(r"^\s*Candidate:\s*(\S+)", r.stdout, re.M)
    if not m or m.group(1) == "(none)":
        return None
    return m.group(1)


def kernel_package() -> str:
    """The pinned kernel package if apt still offers it, else linux-image-amd64's dependency."""
    if cached_deb(KERNEL_PIN) or apt_candidate(KERNEL_PIN):
        return KERNEL_PIN
    r = run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True)
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$", r.stdout, re.M)
    if not m:
        raise SystemExit(f"lane: cannot find a kernel: {KERNEL_PIN} is gone and "
                         f"{KERNEL_META} depends on nothing usable")
    log(f"{KERNEL_PIN} is no longer available, falling back to {m.group(1)}")
    return m.group(1)


def cached_deb(pkg: str) -> str | None:
    d = os.path.join(CACHE, "debs")
    if not os.path.isdir(d):
        return None
    for name in sorted(os.listdir(d)):
        if name.startswith(pkg + "_") and name.endswith(".deb"):
            return os.path.join(d, name)
    return None


def download_deb(pkg: str) -> str:
    """apt-get download pkg into lane/cache/debs (once); returns the .deb path."""
    have = cached_deb(pkg)
    if have:
        return have
    d = os.path.join(CACHE, "debs")
    os.makedirs(d, exist_ok=True)
    log(f"apt-get download {pkg}")
    run(["apt-get", "-o", "APT::Sandbox::User=root", "download", pkg], cwd=d,
        stdout=subprocess.DEVNULL)
    have = cached_deb(pkg)
    if not have:
        raise SystemExit(f"lane: apt-get download {pkg} produced no .deb")
    return have


def unpack_deb(deb: str, dest: str) -> str:
    """dpkg -x deb into dest (once); returns dest."""
    stamp = os.path.join(dest, ".unpacked")
    if os.path.exists(stamp):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    run(["dpkg", "-x", deb, dest])
    open(stamp, "w").close()
    return dest


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside an XZ-compressed bzImage (it has a PVH entry)."""
    magic = b"\xfd7zXZ\x00"
    pos = bzimage.find(magic)
    while pos >= 0:
        try:
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[pos:])
        except lzma.LZMAError:
            out = b""
        if out.startswith(b"\x7fELF"):
            return out
        pos = bzimage.find(magic, pos + 1)
    raise SystemExit("lane: no XZ-compressed ELF kernel found in the bzImage")


def modinfo(ko: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section."""
    import struct
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3a)
    sections = [struct.unpack_from("<IIQQQQ", ko, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx]
    names = ko[strtab[4]:strtab[4] + strtab[5]]
    info: dict[str, str] = {}
    for name_off, _typ, _flags, _addr, off, size in sections:
        if names[name_off:names.index(b"\0", name_off)] == b".modinfo":
            for item in ko[off:off + size].split(b"\0"):
                k, sep, v = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(k, v)
    return info


def load_order(mods: dict[str, bytes], wanted: list[str]) -> list[str]:
    """wanted (in its given order where possible) with each module after its depends=."""
    order: list[str] = []

    def visit(m: str, stack: tuple[str, ...]) -> None:
        if m in order:
            return
        if m in stack:
            raise SystemExit(f"lane: module dependency cycle: {' -> '.join(stack + (m,))}")
        if m not in mods:
            raise SystemExit(f"lane: module {m}.ko (needed by {stack[-1] if stack else 'lane'})"
                             " is not in the kernel package")
        for dep in filter(None, modinfo(mods[m]).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), stack + (m,))
        order.append(m)

    for m in wanted:
        visit(m, ())
    return order


def strip_module_signature(ko: bytes) -> bytes:
    """The module without its appended signature (a no-op for unsigned modules)."""
    if not ko.endswith(MODSIG_MAGIC):
        return ko
    body = ko[:-len(MODSIG_MAGIC)]
    # struct module_signature: 8 bytes of ids/lengths, then __be32 sig_len
    sig_len = int.from_bytes(body[-4:], "big")
    return body[:-(12 + sig_len)]


class Cpio:
    """A minimal newc (SVR4, no CRC) archive writer for the initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = name.strip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        nb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        self.parts.append(hdr + b"\0" * (-len(hdr) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str, perm: int = 0o755) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def tree(self, src: str, dest: str) -> None:
        """Add the directory tree src under dest (files, dirs, symlinks)."""
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else os.path.join(dest, rel)
            self.dir(base, stat.S_IMODE(os.lstat(root).st_mode))
            for n in sorted(dirs + files):
                p = os.path.join(root, n)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(os.path.join(base, n), os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        self.file(os.path.join(base, n), f.read(), stat.S_IMODE(st.st_mode))

    def bytes(self) -> bytes:
        trailer = Cpio()
        trailer._entry("TRAILER!!!", 0, nlink=1)
        return b"".join(self.parts + trailer.parts)


def merged_usr_tree(src: str, dest: str) -> None:
    """Copy the parts of an unpacked package the guest needs (APPARMOR_KEEP) into dest, with
    /sbin, /bin and /lib moved under /usr (the host root is merged-/usr: those are symlinks)."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    for keep in APPARMOR_KEEP:
        candidates = [keep]
        if keep.startswith("usr/"):
            candidates.append(keep[len("usr/"):])
        for c in candidates:
            s = os.path.join(src, c)
            if os.path.isdir(s) and not os.path.islink(s):
                shutil.copytree(s, os.path.join(dest, keep), symlinks=True, dirs_exist_ok=True)


def busybox_applets() -> list[str]:
    out = run([BUSYBOX, "--list"], capture_output=True, text=True).stdout.split()
    return [a for a in out if a != "busybox"]


def build_initramfs(kdir: str, kver: str, apparmor_root: str) -> bytes:
    """busybox + the 9p/overlay/loop modules (signatures stripped) + apparmor userspace + the
    guest scripts from lane/guest/."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules", "lane"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    with open(BUSYBOX, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    for a in busybox_applets():
        c.symlink(f"bin/{a}", "busybox")
    moddir = os.path.join(kdir, "lib", "modules", kver, "kernel")
    paths = {}
    for root, _dirs, files in os.walk(moddir):
        for n in files:
            if n.endswith(".ko"):
                paths[n[:-3].replace("-", "_")] = os.path.join(root, n)

    class Lazy(dict):
        def __missing__(self, m: str) -> bytes:
            if m not in paths:
                raise KeyError(m)
            with open(paths[m], "rb") as f:
                self[m] = f.read()
            return self[m]

        def __contains__(self, m: object) -> bool:
            return m in paths

    mods = Lazy()
    order = load_order(mods, MODULES)
    for m in order:
        c.file(f"modules/{m}.ko", strip_module_signature(mods[m]))
    c.file("modules/order", ("\n".join(order) + "\n").encode())
    c.tree(apparmor_root, "apparmor")
    for n in sorted(os.listdir(GUEST)):
        with open(os.path.join(GUEST, n), "rb") as f:
            c.file(f"lane/{n}", f.read(), 0o755)
    c.symlink("init", "lane/init")
    return c.bytes()


def input_digest(kdeb: str, adeb: str) -> str:
    h = hashlib.sha256()
    for p in [os.path.abspath(__file__), BUSYBOX, kdeb, adeb] + \
            [os.path.join(GUEST, n) for n in sorted(os.listdir(GUEST))]:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    for n in sorted(os.listdir(GUEST)):
        with open(os.path.join(GUEST, n), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build(force: bool = False) -> dict:
    """Build (or reuse) vmlinux and initramfs.cpio under lane/cache; returns the manifest."""
    os.makedirs(CACHE, exist_ok=True)
    a = artifacts()
    pkg = kernel_package()
    kdeb = download_deb(pkg)
    adeb = download_deb(APPARMOR_PKG)
    digest = input_digest(kdeb, adeb)
    if not force and all(os.path.exists(p) for p in a.values()):
        with open(a["manifest"]) as f:
            manifest = json.load(f)
        if manifest.get("digest") == digest:
            return manifest
    kdir = unpack_deb(kdeb, os.path.join(CACHE, pkg))
    kver = pkg[len("linux-image-"):]
    with open(os.path.join(kdir, "boot", f"vmlinuz-{kver}"), "rb") as f:
        log(f"extracting vmlinux from {pkg}")
        write_atomic(a["vmlinux"], extract_vmlinux(f.read()))
    aroot = unpack_deb(adeb, os.path.join(CACHE, "apparmor-deb"))
    atree = os.path.join(CACHE, "apparmor-root")
    merged_usr_tree(aroot, atree)
    log("building initramfs")
    write_atomic(a["initramfs"], build_initramfs(kdir, kver, atree))
    manifest = {"kernel_package": pkg, "kernel_deb": os.path.basename(kdeb),
                "apparmor_deb": os.path.basename(adeb), "digest": digest}
    write_atomic(a["manifest"], json.dumps(manifest, indent=2).encode())
    return manifest
