"""Terminals: a pty made inside the container, its master sent over --console-socket with
SCM_RIGHTS (runc's protocol), and the foreground proxy `pyoci run` uses without a socket."""

from __future__ import annotations

import _struct
import fcntl
import os
import termios

from pyoci.errors import PyociError, SysError
from pyoci.linux import sock as unix   # not `socket`: milliseconds to import

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import ConsoleSize

TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431


def connect_console_socket(path: str):
    s = unix.socket(unix.AF_UNIX, unix.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise PyociError(f"--console-socket {path}: {e.strerror}") from None
    return s


def open_pty(size: ConsoleSize | None = None) -> tuple[int, int]:
    """Open a new pty pair through this mount namespace's /dev/ptmx; returns (master, slave)."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        fcntl.ioctl(master, TIOCSPTLCK, _struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise SysError(f"process.terminal: cannot open a pty: {e.strerror}") from None
    if size is not None:
        set_size(master, size.height, size.width)
    return master, slave


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _struct.pack("HHHH", rows, cols, 0, 0))


def send_master(sock_fd: int, master: int) -> None:
    s = unix.socket(fileno=sock_fd)
    try:
        unix.send_fds(s, [b"/dev/ptmx"], [master])
    finally:
        s.detach()


def recv_master(sock) -> int:
    _, fds, _, _ = unix.recv_fds(sock, 4096, 1)
    if not fds:
        raise SysError("console socket: no file descriptor received")
    return fds[0]


def become_controlling(slave: int) -> None:
    """Make slave the stdio and controlling terminal of this (session leader) process."""
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if slave > 2:
        os.close(slave)


def proxy(master: int, pid_alive) -> None:
    """Copy between our stdin/stdout and the pty master until the container's side closes."""
    import _signal
    import select
    import tty

    stdin_tty = os.isatty(0)
    saved = None
    if stdin_tty:
        saved = termios.tcgetattr(0)
        tty.setraw(0)

        def winch(*_):
            try:
                rows, cols = _struct.unpack("HHHH", fcntl.ioctl(
                    0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
                set_size(master, rows, cols)
            except OSError:
                pass

        winch()
        _signal.signal(_signal.SIGWINCH, winch)
    fds = [master, 0]
    try:
        while True:
            try:
                rl, _, _ = select.select(fds, [], [], 0.2)
            except InterruptedError:
                continue
            if master in rl:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in rl:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                else:
                    os.write(master, data)
            if not rl and not pid_alive():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
