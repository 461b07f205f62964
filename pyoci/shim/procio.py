"""A container process's stdio as containerd hands it to the shim.

containerd names, for stdin, stdout and stderr, either a fifo it reads/writes (ctr, CRI),
`file:///path` (append to a file), `binary:///path?args` (a logging program started with the
output pipes as fds 3 and 4 and a readiness pipe as fd 5, as containerd's runc shim does),
or nothing (/dev/null). Without a terminal the process gets pipes and the shim copies
between them and the fifos; CloseIO (or the end of the stdin fifo) closes the process's
stdin. With a terminal, `pyoci create/exec --console-socket` sends the pty master to the
shim, which copies between it and the fifos and resizes it (ResizePty).

The fifos are opened O_RDWR for output, as the runc shim keeps a reader open: a write never
fails with EPIPE while containerd is away (restarting), it waits for the reader instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
import threading

BUF = 32 * 1024


def _unquote(s: str) -> str:
    """URL percent-decoding (urllib.parse's, without importing it)."""
    if "%" not in s:
        return s
    out = bytearray()
    i = 0
    raw = s.encode(errors="surrogateescape")
    hexdigits = b"0123456789abcdefABCDEF"
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and raw[i + 1] in hexdigits and \
                raw[i + 2] in hexdigits:
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(raw[i])
        i += 1
    return out.decode(errors="surrogateescape")


def split_uri(target: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(scheme, path, query items) of a stdio URI; a plain path has no scheme."""
    if "://" not in target:
        return "", target, []
    scheme, rest = target.split("://", 1)
    path, _, query = rest.partition("?")
    if not path.startswith("/"):           # scheme://host/path: the host is not used
        path = "/" + path.partition("/")[2]
    items = []
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            items.append((_unquote(k.replace("+", " ")), _unquote(v.replace("+", " "))))
    return scheme, _unquote(path), items


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_out(src: int, path: str, done: threading.Event) -> None:
    """Copy src (a pipe or pty master) to the fifo at path until src ends, then close both.
    If the fifo cannot be written, keep reading src so the process never blocks on it."""
    try:
        dst = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        dst = None
    try:
        while True:
            try:
                data = os.read(src, BUF)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                break                       # EIO: the pty's last slave fd closed
            if not data:
                break
            if dst is not None:
                try:
                    _write_all(dst, data)
                except OSError:
                    _close(dst)
                    dst = None
    finally:
        _close(src)
        _close(dst)
        done.set()


class ProcessIO:
    """The stdio of one process (the init or an exec)."""

    def __init__(self, cid: str, namespace: str, stdin: str, stdout: str, stderr: str,
                 terminal: bool, reaper):
        self.cid, self.namespace = cid, namespace
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.terminal = terminal
        self.reaper = reaper
        self.child_fds: list[int] = []    # the command's stdin, stdout, stderr
        self._to_close: list[int] = []    # our copies of the child's ends
        self._stdin_w: int | None = None  # the process's stdin pipe, our end
        self._stdin_r: int | None = None  # the stdin fifo, read end
        self._stdin_keep: int | None = None  # the stdin fifo, our own writer (CloseIO)
        self._stdin_lock = threading.Lock()
        self._out_done: list[threading.Event] = []
        self._copies: list[tuple[int, str]] = []  # output pipes to copy, after the command
        self._console_dir: str | None = None
        self.console_socket: str | None = None
        self._console_listener: socket.socket | None = None
        self.master: int | None = None
        self._logger = None

    # --- before the pyoci command ------------------------------------------------------

    def prepare(self) -> None:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._to_close.append(null)
        if self.stdin:
            r = os.open(self.stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._stdin_r = r
            self._stdin_keep = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.set_blocking(r, True)
        if self.terminal:
            self._console_dir = f"/tmp/pyoci-shim-console-{os.urandom(6).hex()}"
            os.mkdir(self._console_dir, 0o700)
            self.console_socket = os.path.join(self._console_dir, "console.sock")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(self.console_socket)
            s.listen(1)
            self._console_listener = s
            self.child_fds = [null, null, null]
            return
        fds = [null, null, null]
        if self.stdin:
            r, w = os.pipe2(os.O_CLOEXEC)
            fds[0] = r
            self._to_close.append(r)
            self._stdin_w = w
        out_scheme = split_uri(self.stdout)[0] if self.stdout else ""
        if out_scheme == "binary":
            fds[1], fds[2] = self._start_binary_logger(self.stdout)
        else:
            for i, target in ((1, self.stdout), (2, self.stderr)):
                if target:
                    fds[i] = self._output(target)
        self.child_fds = fds

    def _output(self, target: str) -> int:
        """The fd the process writes target through."""
        scheme, path, _ = split_uri(target)
        if scheme == "file":
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._to_close.append(fd)
            return fd
        if scheme not in ("", "fifo"):
            raise OSError(errno.EINVAL, f"unsupported stdio URI scheme {scheme!r} in "
                                        f"{target!r}")
        r, w = os.pipe2(os.O_CLOEXEC)
        self._to_close.append(w)
        self._copies.append((r, path))     # started once the command has succeeded
        return w

    def _start_binary_logger(self, target: str) -> tuple[int, int]:
        _, path, items = split_uri(target)
        argv = [path]
        for k, v in items:
            argv.append(k)
            if v:
                argv.append(v)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        env = dict(os.environ, CONTAINER_ID=self.cid, CONTAINER_NAMESPACE=self.namespace)
        try:
            pid = self.reaper.spawn(argv, {3: out_r, 4: err_r, 5: ready_w}, env)
        except OSError:
            for fd in (out_r, out_w, err_r, err_w, ready_r):
                os.close(fd)
            raise
        finally:
            for fd in (out_r, err_r, ready_w):
                os.close(fd)
        self._logger = pid
        self.reaper.watch(pid, lambda code, when: None)
        try:
            while os.read(ready_r, 64):    # the logger closes fd 5 when it is ready
                pass
        finally:
            os.close(ready_r)
        self._to_close += [out_w, err_w]
        return out_w, err_w

    # --- after the pyoci command -----------------------------------------------------

    def started(self) -> None:
        """The command has the child's ends: close ours, receive the console, start the
        stdin copy."""
        for fd in self._to_close:
            _close(fd)
        self._to_close = []
        for r, path in self._copies:
            done = threading.Event()
            self._out_done.append(done)
            threading.Thread(target=_copy_out, args=(r, path, done), daemon=True).start()
        self._copies = []
        if self.terminal:
            master = self._receive_console()
            if self.stdout:
                done = threading.Event()
                self._out_done.append(done)
                threading.Thread(target=_copy_out, args=(os.dup(master), self.stdout,
                                                         done), daemon=True).start()
            if self.stdin:
                threading.Thread(target=self._copy_in, args=(os.dup(master),),
                                 daemon=True).start()
        elif self._stdin_w is not None:
            threading.Thread(target=self._copy_in, args=(None,), daemon=True).start()

    def failed(self) -> None:
        """The command failed (or never ran): close everything. What it wrote on the
        process's stdio (its own error) is not copied: the error reaches containerd as the
        call's error, as with the runc shim."""
        for fd in self._to_close:
            _close(fd)
        self._to_close = []
        for r, _ in self._copies:
            _close(r)
        self._copies = []
        self.close()

    def _receive_console(self) -> int:
        """The pty master the command sent to our console socket (made by prepare())."""
        s = self._console_listener
        if s is None:
            raise OSError(errno.EBADF, "console socket: not listening")
        s.settimeout(10)
        try:
            conn, _ = s.accept()
        except OSError as e:
            raise OSError(e.errno or errno.ETIMEDOUT,
                          f"console socket: no terminal received ({e})") from None
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise OSError(errno.EPROTO, "console socket: no file descriptor received")
        self.master = master = fds[0]
        os.set_inheritable(master, False)
        self._close_console_socket()
        return master

    def _close_console_socket(self) -> None:
        if self._console_listener is not None:
            self._console_listener.close()
            self._console_listener = None
        if self._console_dir:
            try:
                os.unlink(os.path.join(self._console_dir, "console.sock"))
            except OSError:
                pass
            try:
                os.rmdir(self._console_dir)
            except OSError:
                pass
            self._console_dir = None

    def _copy_in(self, master: int | None) -> None:
        """stdin fifo -> the process (its stdin pipe, or the pty master), until every
        writer of the fifo is gone (ours: CloseIO)."""
        src, self._stdin_r = self._stdin_r, None
        try:
            while src is not None:     # None: closed already (started once per fifo)
                try:
                    data = os.read(src, BUF)
                except OSError:
                    break
                if not data:
                    break
                with self._stdin_lock:
                    dst = master if master is not None else self._stdin_w
                    if dst is None:
                        break
                try:
                    _write_all(dst, data)
                except OSError:
                    break
        finally:
            _close(src)
            _close(master)
            if master is None:
                self.close_stdin()

    # --- requests --------------------------------------------------------------------

    def close_io(self) -> None:
        """CloseIO: drop our writer of the stdin fifo; the process's stdin ends once the
        client's data is through."""
        fd, self._stdin_keep = self._stdin_keep, None
        _close(fd)

    def close_stdin(self) -> None:
        with self._stdin_lock:
            fd, self._stdin_w = self._stdin_w, None
        _close(fd)

    def resize(self, width: int, height: int) -> None:
        if self.master is None:
            raise OSError(errno.ENOTTY, "the process has no terminal")
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def wait_output(self, timeout: float) -> bool:
        """Wait (up to timeout in all) until every output copy has reached its end."""
        import time
        deadline = time.monotonic() + timeout
        return all(d.wait(max(0.0, deadline - time.monotonic())) for d in self._out_done)

    def close(self) -> None:
        self.close_io()
        self.close_stdin()
        fd, self._stdin_r = self._stdin_r, None
        _close(fd)
        self._close_console_socket()
        master, self.master = self.master, None
        _close(master)

