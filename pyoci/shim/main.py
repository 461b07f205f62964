"""containerd-shim-pyoci-v2: the command containerd runs for `io.containerd.pyoci.v2`.

    containerd-shim-pyoci-v2 -namespace NS -address SOCK -publish-binary BIN -id ID [-debug]
                             [-bundle DIR] start|delete

Flags are Go's (-flag value, -flag=value, one or two dashes). The bundle is the working
directory (or -bundle). `start` makes the shim's socket, starts the long-lived shim (this
command without `start`; the socket's fd number in PYOCI_SHIM_SOCKET_FD) unless the pod's
shim already runs, writes
`address` and `shim.pid` in the bundle and prints the address; `delete` cleans up after a
shim that died (pyoci delete --force, the rootfs unmounted) and prints a DeleteResponse.

`start` imports no protobuf: it runs on every container start.
"""

from __future__ import annotations

import os
import sys

try:
    from _sha256 import sha256   # built in: hashlib would load OpenSSL (~10 ms per start)
except ImportError:              # Python >= 3.12
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

SOCKET_DIR = "/run/containerd/s"
SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id"
STRING_FLAGS = ("namespace", "address", "publish-binary", "id", "bundle", "socket")
BOOL_FLAGS = ("debug", "v", "version")


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--" or not a.startswith("-") or a == "-":
            rest.append(a)
            rest += argv[i:] if a != "--" else []
            if a == "--":
                rest.remove("--")
            break
        name, eq, value = a.lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            opts[name] = value.lower() not in ("false", "0") if eq else True
        elif name in STRING_FLAGS:
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            opts[name] = value
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    return opts, rest


def socket_path(address: str, namespace: str, group: str) -> str:
    digest = sha256(f"pyoci\0{address}\0{namespace}\0{group}".encode()).hexdigest()
    return os.path.join(SOCKET_DIR, digest)


def _group(bundle: str, cid: str) -> str:
    """The CRI sandbox id (one shim per pod), else the container's id."""
    from pyoci import jsonio
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            spec = jsonio.loads(f.read())
        return (spec.get("annotations") or {}).get(SANDBOX_ANNOTATION) or cid
    except (OSError, ValueError, AttributeError):
        return cid


def _alive(path: str) -> bool:
    from pyoci.linux import sock as socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _write_file(bundle: str, name: str, text: str) -> None:
    tmp = os.path.join(bundle, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(bundle, name))


def start(opts: dict, bundle: str) -> int:
    import fcntl

    from pyoci.linux import sock as socket

    cid, ns = opts["id"], opts["namespace"]
    path = socket_path(opts.get("address", ""), ns, _group(bundle, cid))
    os.makedirs(SOCKET_DIR, mode=0o711, exist_ok=True)
    address = "unix://" + path
    # one lock for every start: the check for a running pod shim and the bind are atomic
    lock = os.open(os.path.join(SOCKET_DIR, "pyoci-shim-start.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(path):               # the pod's shim: it serves this container too
            _write_file(bundle, "address", address)
            sys.stdout.write(address)
            return 0
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(128)
        argv = [_self_path()] + [a for a in sys.argv[1:] if a != "start"]
        fd = listener.fileno()
        os.set_inheritable(fd, True)   # the only inheritable fd: posix_spawn passes it on
        env = dict(os.environ, PYOCI_SHIM_SOCKET_FD=str(fd))
        if os.path.realpath(bundle) != os.path.realpath(os.getcwd()):
            os.chdir(bundle)
        null = os.O_RDWR
        pid = os.posix_spawn(argv[0], argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, null, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, null, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, null, 0)])
        listener.close()
        _write_file(bundle, "shim.pid", str(pid))
        _write_file(bundle, "address", address)
    finally:
        os.close(lock)
    sys.stdout.write(address)
    return 0


def _self_path() -> str:
    """This command's path, for the long-lived shim (the launcher, not the interpreter)."""
    path = os.environ.get("PYOCI_SHIM_EXE") or sys.argv[0]
    if os.sep not in path:
        import shutil
        path = shutil.which(path) or path
    return os.path.abspath(path)


def delete(opts: dict, bundle: str) -> int:
    """After a shim died (and after every shim's end: containerd runs this whenever a shim's
    connection closes, and waits for it): delete what is left of the container, unmount the
    rootfs, report SIGKILL. Cheap when nothing is left: no pyoci, no protobuf."""
    import time

    cid, ns = opts["id"], opts["namespace"]
    root = os.path.join("/run/containerd/pyoci", ns)
    if os.path.lexists(os.path.join(root, cid)):
        pyoci = _pyoci_path()
        argv = [pyoci, "--root", root, "--log", os.path.join(bundle, "log.json"),
                "--log-format", "json", "delete", "--force", cid]
        pid = os.posix_spawn(pyoci, argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)])
        os.waitpid(pid, 0)
    rootfs = os.path.join(bundle, "rootfs")
    from pyoci.linux.mountinfo import parse_mountinfo

    if any(mi["mountpoint"] == rootfs for mi in parse_mountinfo()):
        from pyoci.shim.service import unmount_rootfs
        unmount_rootfs(bundle)
    sys.stdout.buffer.write(delete_response(128 + 9, time.time()))
    sys.stdout.flush()
    return 0


def delete_response(exit_status: int, exited_at: float) -> bytes:
    """A containerd.task.v2.DeleteResponse {exit_status = 2, exited_at = 3 (seconds = 1,
    nanos = 2)} in protobuf's wire format, written here so that `delete` need not import
    protobuf (tests/test_shim_ttrpc.py compares it with pb.DeleteResponse)."""
    from pyoci.pbwire import varint

    seconds, nanos = int(exited_at), int((exited_at - int(exited_at)) * 1e9)
    ts = (b"\x08" + varint(seconds) if seconds else b"") + \
        (b"\x10" + varint(nanos) if nanos else b"")
    msg = b"\x10" + varint(exit_status) if exit_status else b""
    return msg + b"\x1a" + varint(len(ts)) + ts


def _pyoci_path() -> str:
    here = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "pyoci")
    if os.access(here, os.X_OK):
        return here
    import shutil
    return shutil.which("pyoci") or "pyoci"


def serve(opts: dict, bundle: str) -> int:
    """The long-lived shim."""
    import signal
    import socket
    import threading
    import time

    from pyoci.shim import ttrpc
    from pyoci.shim.events import Publisher
    from pyoci.shim.reaper import Reaper
    from pyoci.shim.service import Service

    started = _process_start_time()
    logfd = _open_log(bundle)
    debug = bool(opts.get("debug"))

    def log(msg: str) -> None:
        if logfd is not None:
            try:
                now = time.time()
                stamp = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
                os.write(logfd, f"{stamp} pyoci-shim[{os.getpid()}] {opts.get('id')}: {msg}\n"
                         .encode(errors="replace"))
            except OSError:
                pass

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    fd = int(os.environ.pop("PYOCI_SHIM_SOCKET_FD", "-1"))
    if fd >= 0:
        listener = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
    else:
        listener = ttrpc.listen(opts.get("socket") or socket_path(
            opts.get("address", ""), opts["namespace"], _group(bundle, opts["id"])))
    path = listener.getsockname()
    reaper = Reaper()
    publisher = Publisher(opts.get("publish-binary", ""), opts.get("address", ""),
                          opts["namespace"], reaper, log,
                          ttrpc_address=os.environ.get("TTRPC_ADDRESS"))
    server = None

    def shutdown() -> None:
        def later() -> None:
            publisher.flush(10)
            try:
                os.unlink(path)
            except (OSError, TypeError):
                pass
            os._exit(0)
        threading.Timer(0.05, later).start()

    service = Service(opts["namespace"], _pyoci_path(), reaper, publisher, log, shutdown)
    trace = None
    if debug:
        def trace(method: str, seconds: float, error: str | None) -> None:
            log(f"{method} {seconds * 1000:.1f} ms" + (f": {error}" if error else ""))
    server = ttrpc.Server(listener, service.methods(), log=log, trace=trace)
    if debug:
        log(f"serving on {path} ({(time.time() - started) * 1000:.0f} ms after exec)")
    server.serve_forever()
    return 0


def _process_start_time() -> float:
    """When this process started (time.time() scale), from /proc."""
    import time
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def _open_log(bundle: str) -> int | None:
    """containerd reads the shim's log from the fifo `log` in the bundle (when it made one)."""
    try:
        return os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, rest = parse(argv)
        if opts.get("v") or opts.get("version"):
            from pyoci import __version__
            sys.stdout.write(f"containerd-shim-pyoci-v2:\n  Version:  {__version__}\n")
            return 0
        if not opts.get("namespace"):
            raise UsageError("shim namespace cannot be empty")
        action = rest[0] if rest else ""
        bundle = opts.get("bundle") or os.getcwd()
        if action in ("start", "delete") and not opts.get("id"):
            raise UsageError("-id is required")
        if action == "start":
            return start(opts, bundle)
        if action == "delete":
            return delete(opts, bundle)
        if action:
            raise UsageError(f"unknown action {action!r}: start or delete")
        if not opts.get("id"):
            raise UsageError("-id is required")
        return serve(opts, bundle)
    except UsageError as e:
        sys.stderr.write(f"containerd-shim-pyoci-v2: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"containerd-shim-pyoci-v2: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
