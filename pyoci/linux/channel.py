"""The channel between pyoci and the children it forks: `create`'s bootstrap and container
init (pyoci.init), `exec`'s joiner and process (pyoci.joiner).

One SOCK_SEQPACKET socketpair per operation, messages of any size (pyoci.linux.sock's
send_msg/recv_msg) that may carry fds. Each kind of message is a record below, encoded and
decoded here only: a JSON object whose "t" names the kind, plus the record's fields.

create (runtime <-> bootstrap, then the init; the bootstrap's end is inherited by the init):

    runtime -> bootstrap  BootstrapSetup   fds made after the fork (exec.fifo, console)
    bootstrap -> runtime  UserNs           a new user namespace: write its id maps
    runtime -> bootstrap  Ok
    bootstrap -> runtime  Pid              the init is forked; the bootstrap exits
    runtime -> init       InitSetup        its pid as the host sees it, and the fds and
                                           addresses made on the host side for it
    runtime -> init       Cgroup           (only with a late cgroup join) the init is in it
    init -> runtime       Hooks            run prestart and createRuntime
    runtime -> init       Ok
    init -> runtime       Listener         connect to the seccomp agent
    runtime -> init       Ok               with the agent's connection
    init -> runtime       Ready            waiting for `start`; then EOF (the init executed
                                           the waiter or closed its end) or an Error

exec (runtime <-> joiner, then the process; the joiner's end is inherited by the process):

    joiner -> runtime     Join             ready to be put into the container's cgroup
    runtime -> joiner     Ok
    joiner -> runtime     Pid              the process is forked; the joiner exits
    runtime -> process    Go               its pid is recorded
    process -> runtime    Notify           the seccomp notify fd, for the agent
    runtime -> process    Ok
    then EOF: the program was executed (the socket is close-on-exec)

Any child -> runtime: Error (the one-line message of what failed; the child exits). The
runtime aborts a child by closing its end: the child reads EOF.
"""

from __future__ import annotations

import os

from pyoci import jsonio
from pyoci.errors import SysError
from pyoci.linux import sock as unix
from pyoci.record import dataclass, field, fields

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    import socket
    from typing import ClassVar, NoReturn, TypeVar

    _M = TypeVar("_M", bound="Message")


class Message:
    """A message record (each kind is a record class with its wire `tag`). `fds`: the
    descriptors that arrived with it (received messages)."""

    tag: ClassVar[str] = ""
    fds: list[int] | tuple = ()

    def close_fds(self) -> None:
        _close(self.fds)
        self.fds = ()


def _close(fds: list[int] | tuple) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@dataclass
class Ok(Message):
    """The runtime's go-ahead (an answer to the child's last message)."""

    tag = "ok"


@dataclass
class Error(Message):
    """What made the child fail, in one line; the child exits after sending it."""

    tag = "error"

    msg: str


@dataclass
class BootstrapSetup(Message):
    """runtime -> bootstrap: the fds made after the fork, named (fds[i] is names[i]: "fifo",
    "console"), and whether the init joins its cgroup late (it then waits for Cgroup)."""

    tag = "setup"

    names: list[str] = field(default_factory=list)
    cgroup_later: bool = False


@dataclass
class UserNs(Message):
    """bootstrap -> runtime: the new user namespace waits for its uid/gid maps."""

    tag = "userns"


@dataclass
class Pid(Message):
    """bootstrap/joiner -> runtime: the pid of the child it forked (as the runtime sees it)."""

    tag = "pid"

    pid: int


@dataclass
class InitSetup(Message):
    """runtime -> init: its pid on the host, the addresses of the network devices moved into
    its namespace, and fds made on the host side: idmapped mounts (their indexes in mounts[],
    fds first) and bind sources (their indexes, fds after)."""

    tag = "init"

    pid: int
    netdev: dict | None = None
    idmap: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)


@dataclass
class Cgroup(Message):
    """runtime -> init: the init is in the container's cgroup (BootstrapSetup.cgroup_later)."""

    tag = "cgroup"


@dataclass
class Hooks(Message):
    """init -> runtime: the rootfs is ready, run the prestart and createRuntime hooks."""

    tag = "hooks"


@dataclass
class Listener(Message):
    """init -> runtime: connect to the seccomp agent (linux.seccomp.listenerPath)."""

    tag = "listener"


@dataclass
class Ready(Message):
    """init -> runtime: set up; what follows is EOF or an Error (loading a filter)."""

    tag = "ready"


@dataclass
class Join(Message):
    """joiner -> runtime: put me into the container's cgroup."""

    tag = "join"


@dataclass
class Go(Message):
    """runtime -> process: its pid is recorded, it may set itself up and execute."""

    tag = "go"


@dataclass
class Notify(Message):
    """process -> runtime: the seccomp notify fd (attached), for the agent."""

    tag = "seccomp"


_KINDS: dict[str, type[Message]] = {kind.tag: kind for kind in (
    Ok, Error, BootstrapSetup, UserNs, Pid, InitSetup, Cgroup, Hooks, Listener, Ready, Join,
    Go, Notify)}     # wire tag -> message record


def encode(msg: Message) -> bytes:
    doc: dict[str, object] = {"t": msg.tag}
    for name in fields(msg):
        doc[name] = getattr(msg, name)
    return jsonio.dumps(doc).encode()


def decode(data: bytes) -> Message:
    """A message record from its wire form; ValueError if it is none."""
    try:
        doc = jsonio.loads(data)
        kind = _KINDS[doc.pop("t")]
        return kind(**doc)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed message ({e})") from None


class Channel:
    """One end of the socketpair. peer: who is at the other end ("container init"), named in
    the errors; gone: the error when it closes its end while a message is awaited."""

    def __init__(self, sock: socket.socket, peer: str, gone: str) -> None:
        self.sock = sock
        self.peer = peer
        self.gone = gone

    @classmethod
    def pair(cls, peer: str, gone: str, child_peer: str,
             child_gone: str) -> tuple[Channel, Channel]:
        """(the runtime's end, the child's end)."""
        a, b = unix.socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
        return cls(a, peer, gone), cls(b, child_peer, child_gone)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def send(self, msg: Message, fds: list[int] | tuple = ()) -> None:
        unix.send_msg(self.sock, encode(msg), fds)

    def recv(self, maxfds: int = 0) -> Message:
        """The next message (with the fds it carried, up to maxfds); an Error raises its text
        as a SysError, EOF too (self.gone)."""
        msg = self.recv_or_eof(maxfds)
        if msg is None:
            raise SysError(self.gone)
        return msg

    def recv_or_eof(self, maxfds: int = 0) -> Message | None:
        """recv, but None at EOF (the peer closed its end: exited, or executed)."""
        data, fds = unix.recv_msg(self.sock, maxfds)
        if not data:
            _close(fds)
            return None
        try:
            msg = decode(data)
        except ValueError as e:
            _close(fds)
            raise SysError(f"{self.peer}: {e}") from None
        msg.fds = fds
        if isinstance(msg, Error):
            msg.close_fds()
            raise SysError(msg.msg)
        return msg

    def expect(self, kind: type[_M], maxfds: int = 0) -> _M:
        """The next message, which must be a `kind` (else a SysError, see recv)."""
        msg = self.recv(maxfds)
        if not isinstance(msg, kind):
            msg.close_fds()
            raise SysError(f"unexpected message {msg.tag!r} from {self.peer}")
        return msg

    def fail(self, e: BaseException) -> NoReturn:
        """In a child: report e to the runtime and exit (a child never returns into the
        runtime's code). Once the channel is closed (the init after Ready), the message goes
        to stderr: the program's, as the waiter's would."""
        from pyoci.linux import child

        msg = child.error_message(e)
        try:
            self.send(Error(msg))
        except OSError:
            try:
                os.write(2, f"pyoci: {msg}\n".encode(errors="replace"))
            except OSError:
                pass
        os._exit(1)

