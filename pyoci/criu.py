"""`pyoci checkpoint` and `pyoci restore`: the container's processes dumped to image files
and restored by CRIU, with runc's flags and image layout.

pyoci speaks CRIU's RPC protocol (`criu swrk FD`: one protobuf message per SOCK_SEQPACKET
datagram; the messages and field numbers are those of CRIU's rpc.proto, encoded here by a
small codec rather than the protobuf package), as runc does: that is how CRIU reports its
notifications (hooks at setup-namespaces, the restored pid at post-restore, the pty master of
a restored terminal at orphan-pts-master), and how a restored process becomes our child
(rst_sibling) for `restore` in the foreground.

--lazy-pages (runc's): the dump leaves the memory pages behind and serves them from a page
server (--page-server ADDRESS:PORT) until a `criu lazy-pages --page-server --address A --port P`
daemon next to a `restore --lazy-pages` has fetched them all (the checkpoint returns then);
--status-fd FD gets a \0 once that page server listens (CRIU's status-ready notification,
CRIU >= 3.15). Both commands first ask CRIU whether it supports lazy pages (its feature check,
as runc) and fail at once otherwise, with the reason `criu check --feature uffd-noncoop` gives.
--page-server without --lazy-pages sends the dump's pages to a running `criu page-server`.

Before anything is created, `criu check` must pass: where CRIU cannot work (a kernel it does
not support) both commands fail at once with CRIU's reason and leave nothing behind.

As runc: the image directory also holds descriptors.json (what the init's stdio were), bind
mounts and masked files are external mounts (the destination at dump; the source, /dev/null
for masked files, at restore), the container's cgroups are managed by CRIU (soft by default)
with CRIU itself placed in the new container's cgroup at restore, and `checkpoint` without
--leave-running or --pre-dump deletes the container after the dump.
"""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING, jsonio
from pyoci.pbwire import read_varint, varint
from pyoci import state as st_mod
from pyoci.errors import ConfigError, PyociError, StateError, SysError, UsageError
from pyoci.linux import spawn

if TYPE_CHECKING:
    from pyoci.spec import config

# the checkpoint and restore flags: pyoci.cli.TABLE

DESCRIPTORS = "descriptors.json"

# --- CRIU's RPC messages (rpc.proto), a minimal protobuf codec ----------------------------

# message -> field -> (number, type, repeated); type is a scalar kind or a message name
_SCHEMA: dict[str, dict[str, tuple[int, str, bool]]] = {
    "criu_page_server_info": {"address": (1, "string", False), "port": (2, "int32", False),
                              "pid": (3, "int32", False), "fd": (4, "int32", False)},
    "ext_mount_map": {"key": (1, "string", False), "val": (2, "string", False)},
    "inherit_fd": {"key": (1, "string", False), "fd": (2, "int32", False)},
    "cgroup_root": {"ctrl": (1, "string", False), "path": (2, "string", False)},
    "criu_opts": {
        "images_dir_fd": (1, "int32", False), "pid": (2, "int32", False),
        "leave_running": (3, "bool", False), "ext_unix_sk": (4, "bool", False),
        "tcp_established": (5, "bool", False), "shell_job": (7, "bool", False),
        "file_locks": (8, "bool", False), "log_level": (9, "int32", False),
        "log_file": (10, "string", False), "ps": (11, "criu_page_server_info", False),
        "notify_scripts": (12, "bool", False), "root": (13, "string", False),
        "parent_img": (14, "string", False), "track_mem": (15, "bool", False),
        "auto_dedup": (16, "bool", False), "work_dir_fd": (17, "int32", False),
        "ext_mnt": (23, "ext_mount_map", True), "manage_cgroups": (24, "bool", False),
        "cg_root": (25, "cgroup_root", True), "rst_sibling": (26, "bool", False),
        "inherit_fd": (27, "inherit_fd", True), "manage_cgroups_mode": (34, "enum", False),
        "external": (37, "string", True), "empty_ns": (38, "uint32", False),
        "freeze_cgroup": (44, "string", False), "lazy_pages": (48, "bool", False),
        "status_fd": (49, "int32", False), "orphan_pts_master": (50, "bool", False),
    },
    "criu_dump_resp": {"restored": (1, "bool", False)},
    "criu_restore_resp": {"pid": (1, "int32", False)},
    "criu_notify": {"script": (1, "string", False), "pid": (2, "int32", False)},
    "criu_features": {"mem_track": (1, "bool", False), "lazy_pages": (2, "bool", False)},
    "criu_version": {"major_number": (1, "int32", False), "minor_number": (2, "int32", False),
                     "gitid": (3, "string", False), "sublevel": (4, "int32", False)},
    "criu_req": {"type": (1, "enum", False), "opts": (2, "criu_opts", False),
                 "notify_success": (3, "bool", False), "keep_open": (4, "bool", False),
                 "features": (5, "criu_features", False)},
    "criu_resp": {"type": (1, "enum", False), "success": (2, "bool", False),
                  "dump": (3, "criu_dump_resp", False),
                  "restore": (4, "criu_restore_resp", False),
                  "notify": (5, "criu_notify", False),
                  "cr_errno": (7, "int32", False), "features": (8, "criu_features", False),
                  "cr_errmsg": (9, "string", False), "version": (10, "criu_version", False),
                  "status": (11, "int32", False)},
}
REQ_DUMP, REQ_RESTORE, REQ_PRE_DUMP, REQ_NOTIFY, REQ_FEATURE_CHECK = 1, 2, 4, 6, 9
LAZY_CHECK = "uffd-noncoop"       # what CRIU's lazy_pages feature is (kdat uffd + non-coop)
CG_MODES = {"ignore": 0, "props": 2, "soft": 3, "full": 4, "strict": 5}
_VARINT = ("int32", "uint32", "bool", "enum")


def encode(message: str, value: dict) -> bytes:
    fields = _SCHEMA[message]
    out = bytearray()
    for name, v in value.items():
        num, kind, repeated = fields[name]
        for item in (v if repeated else [v]):
            if kind in _VARINT:
                out += varint(num << 3) + varint(int(item))
            else:
                data = item.encode() if kind == "string" else encode(kind, item)
                out += varint(num << 3 | 2) + varint(len(data)) + data
    return bytes(out)


def decode(message: str, data: bytes) -> dict:
    by_num = {num: (name, kind, rep) for name, (num, kind, rep) in _SCHEMA[message].items()}
    out: dict = {}
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        num, wire = key >> 3, key & 7
        raw: int | bytes
        if wire == 0:
            raw, i = read_varint(data, i)
        elif wire == 2:
            ln, i = read_varint(data, i)
            raw, i = data[i:i + ln], i + ln
        elif wire == 1:
            raw, i = data[i:i + 8], i + 8
        elif wire == 5:
            raw, i = data[i:i + 4], i + 4
        else:
            raise SysError(f"criu: malformed reply (wire type {wire})")
        if num not in by_num:
            continue
        name, kind, rep = by_num[num]
        val: object
        if (kind in _VARINT) != isinstance(raw, int):
            raise SysError(f"criu: malformed reply ({message}.{name}: wire type {wire})")
        if isinstance(raw, int):
            if kind == "int32" and raw >= 1 << 63:
                raw -= 1 << 64
            val = bool(raw) if kind == "bool" else raw
        elif kind == "string":
            val = bytes(raw).decode(errors="replace")
        else:
            val = decode(kind, bytes(raw))
        if rep:
            out.setdefault(name, []).append(val)
        else:
            out[name] = val
    return out


# --- running CRIU -------------------------------------------------------------------------

def criu_binary(gopts: dict) -> str:
    name = gopts.get("criu") or "criu"
    if "/" in name:
        return name
    path = spawn.find(name, os.environ.get("PATH", ""), ("/usr/sbin", "/sbin"))
    if path is None:
        raise SysError(f"criu: {name} not found in $PATH (Debian package criu)")
    return path


def _spawn_output(argv: list[str]) -> tuple[int, str]:
    """Run argv, return (exit code, stdout+stderr)."""
    try:
        code, out = spawn.output(argv[0], argv, stdin_null=True)
    except OSError as e:
        raise SysError(f"criu: run {argv[0]}: {e.strerror}") from None
    return code, out.decode(errors="replace")


def _criu_error_line(text: str) -> str | None:
    """CRIU's first "Error (file:line): message" line, as "message"."""
    for line in text.splitlines():
        _, sep, rest = line.partition("Error (")
        if sep and "): " in rest:
            return rest.split("): ", 1)[1].strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def check_criu(criu: str, what: str) -> None:
    """`criu check`, the first thing both commands do: where CRIU cannot work here, fail at
    once with its reason."""
    code, out = _spawn_output([criu, "check"])
    if code != 0:
        raise SysError(f"{what}: CRIU cannot work on this host (criu check): "
                       f"{_criu_error_line(out) or f'exit status {code}'}")


class Swrk:
    """A `criu swrk` process and our end of its socket."""

    def __init__(self, criu: str, close: tuple[int, ...] = (), quiet: bool = False) -> None:
        """close: our fds CRIU must not hold (the --status-fd: its reader sees EOF when we
        close it); quiet: its stderr to /dev/null (a feature check: the reason comes from
        `criu check`)."""
        from pyoci.linux import sock as unix

        self.sock, theirs = unix.socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
        fd = theirs.fileno()
        os.set_inheritable(fd, True)
        try:
            self.pid = os.posix_spawn(criu, [criu, "swrk", str(fd)], os.environ,
                                      file_actions=[(os.POSIX_SPAWN_CLOSE, c) for c in close]
                                      + ([(os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY,
                                           0)] if quiet else []))
        except OSError as e:
            self.sock.close()
            raise SysError(f"criu: run {criu}: {e.strerror}") from None
        finally:
            theirs.close()

    def send(self, req: dict) -> None:
        self.sock.send(encode("criu_req", req))

    def recv(self) -> tuple[dict, list[int]]:
        from pyoci.linux import sock as unix

        data, fds, _, _ = unix.recv_fds(self.sock, 1 << 20, 4)
        if not data:
            raise SysError("criu exited without a reply")
        return decode("criu_resp", data), fds

    def close(self) -> None:
        self.sock.close()
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def _run_request(sw: Swrk, req: dict, on_notify, what: str, log: str) -> dict:
    """Send req, answer the notifications (on_notify(script, pid, fds)), return the final
    reply; a failure is the first error of CRIU's log."""
    sw.send(req)
    while True:
        resp, fds = sw.recv()
        if resp.get("type") == REQ_NOTIFY:
            n = resp.get("notify") or {}
            try:
                on_notify(n.get("script", ""), n.get("pid", 0), fds)
            except BaseException:
                sw.send({"type": REQ_NOTIFY, "notify_success": False})
                raise
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            sw.send({"type": REQ_NOTIFY, "notify_success": True})
            continue
        if not resp.get("success"):
            reason = resp.get("cr_errmsg")
            try:
                with open(log, errors="replace") as f:
                    reason = _criu_error_line(f.read()) or reason
            except OSError:
                pass
            raise SysError(f"{what}: criu failed: {reason or 'no reason given'} "
                           f"(log: {log})")
        return resp


def check_lazy_pages(criu: str, what: str) -> None:
    """runc's feature check: ask CRIU (RPC FEATURE_CHECK) whether it supports lazy pages;
    if not, fail with CRIU's reason for it."""
    import shutil
    import tempfile

    # images_dir_fd is a required field: a private, empty directory for CRIU's log, removed
    # afterwards (the image path is not made before the check passes)
    tmp = tempfile.mkdtemp(prefix="pyoci-criu-features-")
    fd = -1
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        sw = Swrk(criu, quiet=True)
        try:
            sw.send({"type": REQ_FEATURE_CHECK, "features": {"lazy_pages": True},
                     "opts": {"images_dir_fd": fd, "log_level": 0,
                              "log_file": "features.log"}})
            resp, fds = sw.recv()
            for f in fds:
                os.close(f)
        finally:
            sw.close()
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
    if resp.get("success") and (resp.get("features") or {}).get("lazy_pages"):
        return
    code, out = _spawn_output([criu, "check", "--feature", LAZY_CHECK])
    reason = _criu_error_line(out) if code != 0 else None
    raise SysError(f"{what}: --lazy-pages: CRIU is missing features: LazyPages"
                   + (f" ({reason})" if reason else ""))


def page_server(value: str) -> dict:
    """--page-server ADDRESS:PORT as runc parses it: Go's net.SplitHostPort, then Atoi, the
    port as an int32; a port of 0 gives no page server, as in runc."""
    bad = UsageError("Use --page-server ADDRESS:PORT to specify page server")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1:end + 2] != ":":
            raise bad
        host, port = value[1:end], value[end + 2:]
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise bad
    if not host or not port or any(c in host + port for c in "[]"):
        raise bad
    digits = port[1:] if port[0] in "+-" else port
    if not digits.isascii() or not digits.isdigit() or abs(int(port, 10)) >= 1 << 63:
        raise UsageError("Invalid port number")
    n = (int(port, 10) + (1 << 31)) % (1 << 32) - (1 << 31)       # Go's int32(portInt)
    return {"address": host, "port": n}


def status_fd(value: str | None) -> int:
    """--status-fd: runc's int flag (Go's ParseInt base 0), -1 when not given."""
    if value is None:
        return -1
    v = value.replace("_", "") if "_" in value.strip("_") else value
    body = v[1:] if v[:1] in "+-" else v
    try:
        if len(body) > 1 and body[0] == "0" and body[1].isdigit():
            n = int(v[:len(v) - len(body)] + "0o" + body[1:], 0)      # Go: leading 0 is octal
        else:
            n = int(v, 0)
    except ValueError:
        n = None
    if n is None or not -(1 << 63) <= n < 1 << 63:
        raise UsageError(f'invalid value "{value}" for flag -status-fd: parse error')
    return n


def _check_status_fd(fd: int, what: str) -> None:
    """runc: the --status-fd must be an open, writable descriptor."""
    import fcntl

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (OSError, OverflowError, ValueError) as e:
        msg = e.strerror if isinstance(e, OSError) else None
        raise UsageError(f"{what}: invalid --status-fd argument {fd}: "
                         f"{(msg or 'Bad file descriptor').lower()}") from None
    if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        raise UsageError(f"{what}: invalid --status-fd argument {fd}: not writable")


# --- shared option handling ---------------------------------------------------------------

def _ns_flag(name: str) -> int:
    from pyoci.linux import namespaces as nsmod

    if name not in nsmod.FLAGS or name == "user":
        raise UsageError(f"--empty-ns: unknown or unsupported namespace {name!r}")
    return nsmod.FLAGS[name]


def _common_opts(o: dict, images_fd: int, work_fd: int, log: str) -> dict:
    opts: dict = {"images_dir_fd": images_fd, "work_dir_fd": work_fd, "log_level": 4,
                  "log_file": log, "notify_scripts": True, "manage_cgroups": True}
    for key in ("tcp_established", "ext_unix_sk", "shell_job", "file_locks", "auto_dedup"):
        if o.get(key):
            opts[key] = True
    mode = o.get("manage_cgroups_mode")
    if mode:
        if mode not in CG_MODES:
            raise UsageError(f"--manage-cgroups-mode: invalid value {mode!r} (soft, full, "
                             "strict or ignore)")
        opts["manage_cgroups_mode"] = CG_MODES[mode]
    if o.get("empty_ns"):
        opts["empty_ns"] = _ns_flag(o["empty_ns"])
    if o.get("lazy_pages"):
        opts["lazy_pages"] = True
    return opts


def _dir_fd(path: str, what: str, create: bool) -> int:
    if create:
        try:
            os.makedirs(path, 0o700, exist_ok=True)
        except OSError as e:
            raise SysError(f"{what} {path}: {e.strerror}") from None
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)     # inherited by criu
    except OSError as e:
        raise SysError(f"{what} {path}: {e.strerror}") from None


def _mounts_external(spec: config.Spec, restore: bool, bundle: str) -> list[dict]:
    """runc's external mounts: each bind mount (destination -> destination at dump, ->
    source at restore) and each masked file (-> /dev/null)."""
    out = []
    for m in spec.mounts:
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            dest = os.path.normpath(m.destination)
            src = m.source
            if not os.path.isabs(src):
                src = os.path.join(bundle, src)
            out.append({"key": dest, "val": src if restore else dest})
    rootfs = spec.root.path
    rootfs = rootfs if os.path.isabs(rootfs) else os.path.join(bundle, rootfs)
    for p in spec.linux.masked_paths:
        host = os.path.join(rootfs, p.lstrip("/"))
        if os.path.exists(host) and not os.path.isdir(host):
            out.append({"key": p, "val": "/dev/null"})
    return out


def _external_namespaces(spec: config.Spec) -> list[tuple[str, str]]:
    """Namespaces the config joins by path: (type, path); only network is handed to CRIU
    (runc's extRootNetNS), the others it refuses."""
    return [("network", ns.path) for ns in spec.linux.namespaces
            if ns.path and ns.type == "network"]


# --- checkpoint ---------------------------------------------------------------------------

def checkpoint(root: str, cid: str, gopts: dict, o: dict) -> None:
    sfd = status_fd(o.get("status_fd"))          # an int flag: parsed before anything
    st = st_mod.load(root, cid)
    status = st_mod.status(st)
    if status in ("created", "stopped"):
        raise StateError(f"container cannot be checkpointed in {status} state")
    ps = page_server(o["page_server"]) if o.get("page_server") else None
    criu = criu_binary(gopts)
    check_criu(criu, "checkpoint")
    lazy = bool(o.get("lazy_pages"))
    if lazy:
        check_lazy_pages(criu, "checkpoint")
        if sfd != -1:
            _check_status_fd(sfd, "checkpoint")
    else:
        sfd = -1                      # runc looks at --status-fd only with --lazy-pages
    from pyoci.spec import config

    spec = config.parse(st_mod.load_config(st))
    cwd = os.getcwd()
    image_path = os.path.abspath(o.get("image_path") or os.path.join(cwd, "checkpoint"))
    work_path = os.path.abspath(o.get("work_path") or image_path)
    pre = bool(o.get("pre_dump"))
    with st_mod.Lock(st.dir):
        images_fd = _dir_fd(image_path, "--image-path", True)
        work_fd = _dir_fd(work_path, "--work-path", True)
        try:
            log = "pre-dump.log" if pre else "dump.log"
            opts = _common_opts(o, images_fd, work_fd, log)
            opts.update(pid=st.pid, root=st.rootfs)
            if o.get("leave_running") and not pre:
                opts["leave_running"] = True
            if ps and ps["port"] != 0:
                opts["ps"] = ps
            if o.get("parent_path"):
                opts["parent_img"] = o["parent_path"]
                opts["track_mem"] = True
            if pre:
                opts["track_mem"] = True
            ext = _mounts_external(spec, False, st.bundle)
            if ext:
                opts["ext_mnt"] = ext
            external = []
            for _t, path in _external_namespaces(spec):
                external.append(f"net[{os.stat(path).st_ino}]:extRootNetNS")
            if external:
                opts["external"] = external
            if st.cgroup:
                freezer = _freezer_path(st.cgroup)
                if freezer:
                    opts["freeze_cgroup"] = freezer
            if not pre:
                _write_descriptors(st.pid, image_path)
            sw = Swrk(criu, close=(sfd,) if sfd > 2 else ())
            try:
                def notify(script: str, _pid: int, _fds: list[int]) -> None:
                    nonlocal sfd
                    if script == "status-ready" and sfd != -1:
                        # the page server listens: \0 to --status-fd, closed (runc)
                        try:
                            os.write(sfd, b"\0")
                        except OSError:
                            pass
                        try:
                            os.close(sfd)
                        except OSError:
                            pass
                        sfd = -1

                _run_request(sw, {"type": REQ_PRE_DUMP if pre else REQ_DUMP, "opts": opts},
                             notify, "checkpoint", os.path.join(work_path, log))
            finally:
                sw.close()
        finally:
            os.close(images_fd)
            os.close(work_fd)
    if not pre and not o.get("leave_running"):
        from pyoci.ops.delete import delete

        delete(root, cid, force=True)


def _freezer_path(cg: dict) -> str | None:
    """The cgroup CRIU freezes the container with (runc's FreezeCgroup)."""
    if cg.get("driver") == "v1":
        return (cg.get("paths") or {}).get("freezer")
    return cg.get("path") or None


def _write_descriptors(pid: int, image_path: str) -> None:
    fds = []
    for n in range(3):
        try:
            fds.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            fds.append("")
    st_mod.write_atomic(os.path.join(image_path, DESCRIPTORS), jsonio.dumps(fds).encode())


# --- restore ------------------------------------------------------------------------------

def restore(root: str, cid: str, gopts: dict, o: dict) -> int:
    """Restore the container cid from the images; returns the exit code (foreground: the
    restored process's, as `run`)."""
    from pyoci.ops import create
    from pyoci.spec import config, load as spec_load

    st_mod.check_id(cid)
    bundle = os.path.abspath(o.get("bundle") or ".")
    doc = spec_load.read_config(bundle)
    detach = bool(o.get("detach"))
    copts = create.CreateOptions(root=root, cid=cid, bundle=bundle,
                                    pid_file=o.get("pid_file"),
                                    console_socket=o.get("console_socket"),
                                    no_pivot=bool(o.get("no_pivot")), detach=detach,
                                    systemd_cgroup=bool(gopts.get("systemd_cgroup")))
    rootfs = create.check_config(doc, bundle, copts)
    spec = config.parse(doc)
    image_path = os.path.abspath(o.get("image_path") or os.path.join(os.getcwd(),
                                                                      "checkpoint"))
    work_path = os.path.abspath(o.get("work_path") or image_path)
    try:
        with open(os.path.join(image_path, DESCRIPTORS)) as f:
            fds_desc = jsonio.loads(f.read())
    except OSError as e:
        raise PyociError(f"--image-path: {image_path}/{DESCRIPTORS}: {e.strerror} (not a "
                         "checkpoint's images)") from None
    criu = criu_binary(gopts)
    check_criu(criu, "restore")
    if o.get("lazy_pages"):
        check_lazy_pages(criu, "restore")
    assert spec.process is not None               # _check_config refuses a config without one
    terminal = spec.process.terminal
    if not detach and not o.get("no_subreaper"):
        from pyoci.linux import syscalls as sc

        sc.set_child_subreaper()
    root = st_mod.ensure_root(root)
    cdir = st_mod.container_dir(root, cid)
    st = st_mod.State(id=cid, bundle=bundle, rootfs=rootfs, created=create.rfc3339_now(),
                      annotations=spec.annotations, oci_version=spec.oci_version, dir=cdir)
    linux = spec.linux
    rs = create.Rollback()
    criu_root: list[str] = []           # the bind mount CRIU pivots into, while it exists
    cg = None
    console = {"master": -1}
    opened: list[int] = []
    try:
        from pyoci import cgroups

        cg = cgroups.new_manager(linux.cgroups_path or None, cid,
                                 systemd=copts.systemd_cgroup)
        cg.check(linux.resources)
        try:
            os.mkdir(cdir, 0o700)
        except FileExistsError:
            from pyoci.errors import ContainerExists

            raise ContainerExists(cid) from None
        rs.dir_made = True
        with st_mod.Lock(cdir):
            st_mod.write_atomic(os.path.join(cdir, st_mod.CONFIG_FILE),
                                jsonio.dumps(spec.raw).encode())
            cs = None
            if copts.console_socket:
                from pyoci.linux import terminal as term

                cs = term.connect_console_socket(copts.console_socket)
            images_fd = _dir_fd(image_path, "--image-path", False)
            opened.append(images_fd)
            work_fd = _dir_fd(work_path, "--work-path", True)
            opened.append(work_fd)
            opts = _common_opts(o, images_fd, work_fd, "restore.log")
            opts["rst_sibling"] = True
            if terminal:
                opts["orphan_pts_master"] = True
            ext = _mounts_external(spec, True, bundle)
            if ext:
                opts["ext_mnt"] = ext
            inherit = []
            for i, desc in enumerate(fds_desc[:3]):
                if "pipe:" in desc:
                    inherit.append({"key": desc, "fd": i})
            for _t, path in _external_namespaces(spec):
                fd = os.open(path, os.O_RDONLY)
                opened.append(fd)
                inherit.append({"key": "extRootNetNS", "fd": fd})
            if inherit:
                opts["inherit_fd"] = inherit
            rs.cgroup_made = True
            cg.create()
            # CRIU pivots into the root it is given: it must be a mount point (runc's
            # criu-root), removed again whatever happens
            path = os.path.join(cdir, "criu-root")
            os.mkdir(path, 0o755)
            from pyoci.linux import syscalls as sc

            sc.mount(rootfs, path, None, sc.MS_BIND | sc.MS_REC, None)
            criu_root.append(path)
            opts["root"] = path
            sw = Swrk(criu)
            try:
                cg.add(sw.pid)
                cg.apply(linux.resources)
                roots = _cgroup_roots(sw.pid, v1=cg.driver == "v1")
                if roots:
                    opts["cg_root"] = roots
                hooks = spec.hooks

                def notify(script: str, pid: int, fds: list[int]) -> None:
                    if script == "setup-namespaces" and (hooks.prestart
                                                         or hooks.create_runtime):
                        from pyoci.linux.hooks import run_hooks

                        rs.hooks_ran = True
                        public = st_mod.public_state(st, "creating")
                        public["pid"] = pid
                        run_hooks(hooks, "prestart", public)
                        run_hooks(hooks, "createRuntime", public)
                    elif script == "post-restore":
                        rs.init = pid
                    elif script == "orphan-pts-master" and fds:
                        if cs is not None:
                            from pyoci.linux import terminal as term

                            term.send_master(cs.fileno(), fds[0])
                        else:
                            console["master"] = os.dup(fds[0])

                resp = _run_request(sw, {"type": REQ_RESTORE, "opts": opts}, notify,
                                    "restore", os.path.join(work_path, "restore.log"))
            finally:
                sw.close()
                if cs is not None:
                    cs.close()
                _unmount_criu_root(criu_root)
            pid = (resp.get("restore") or {}).get("pid") or rs.init
            rs.init = pid
            ps = st_mod.proc_stat(pid)
            if ps is None:
                raise SysError("restore: the restored process exited at once")
            st.pid, st.start_time = pid, ps[1]
            st.cgroup = cg.to_state()
            from pyoci.linux import namespaces as nsmod

            st.namespaces = {t: f"/proc/{pid}/ns/{nsmod.PROC_NAME[t]}"
                             for t in spec.linux.namespace_paths()}
            st.started = True
            st_mod.save(st)
            if copts.pid_file:
                create.write_pid_file(copts.pid_file, pid)
    except BaseException as e:
        if console["master"] >= 0:
            os.close(console["master"])
        _unmount_criu_root(criu_root)
        create.abort_create(st, spec, cg, rs)
        if isinstance(e, KeyboardInterrupt):
            raise PyociError("interrupted") from None
        raise
    finally:
        for fd in opened:
            os.close(fd)
    if detach:
        if console["master"] >= 0:
            os.close(console["master"])
        return 0
    return _foreground(root, cid, st, console["master"])


def _unmount_criu_root(criu_root: list[str]) -> None:
    if criu_root:
        path = criu_root.pop()
        from pyoci.linux import syscalls as sc

        try:
            sc.umount2(path, sc.MNT_DETACH)
        except OSError:
            pass
        try:
            os.rmdir(path)
        except OSError:
            pass


def _cgroup_roots(pid: int, v1: bool) -> list[dict]:
    """The cgroup roots CRIU restores the tasks under: the cgroup CRIU is in (the new
    container's). cgroup v1 (runc's CgroupRoot list): each controller -> its path. A pure
    cgroup v2 host: one default root (no controller). runc gives none on v2, and CRIU then
    puts the tasks back in the cgroup they were dumped from: the same one when the id is the
    same, but another container's (the dumped one, still there) after a lazy migration to a
    new id, and deleting that container would kill them."""
    out, unified = [], None
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hier, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrls:
                out.append({"ctrl": ctrls, "path": path})
            elif hier == "0":
                unified = path
    if v1:
        return out
    return [{"path": unified}] if not out and unified else []


def _foreground(root: str, cid: str, st, master: int) -> int:
    """As `run` in the foreground: forward signals, proxy the terminal, wait for the
    restored init, delete the container, its exit code."""
    from pyoci.foreground import Forwarder, wait_exit
    from pyoci.ops.delete import delete

    forward = Forwarder()
    forward.to(st.pid)
    try:
        if master >= 0:
            from pyoci.linux import terminal

            terminal.proxy(master, lambda: st_mod.init_alive(st))
        code = wait_exit(st.pid)
    finally:
        forward.restore()
        if master >= 0:
            os.close(master)
        try:
            delete(root, cid, force=True)
        except PyociError:
            pass
    return code


# --- the commands -------------------------------------------------------------------------

def run_command(cmd: str, root: str, global_opts: dict, opts: dict,
                positionals: list[str]) -> int:
    if len(positionals) != 1:
        raise UsageError(f'"{cmd}" requires exactly 1 argument(s)')
    if os.geteuid() != 0:
        raise ConfigError(f"{cmd}: needs root (CRIU dumps and restores processes as root)")
    if cmd == "checkpoint":
        checkpoint(root, positionals[0], global_opts, opts)
        return 0
    return restore(root, positionals[0], global_opts, opts)
