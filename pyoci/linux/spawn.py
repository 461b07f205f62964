"""Host helper programs (criu, newuidmap/newgidmap): found on a search path and run with
posix_spawn (subprocess costs milliseconds to import), what they write to stdout and stderr
read back through one pipe."""

from __future__ import annotations

import os


def find(name: str, search: str, extra: tuple[str, ...] = ()) -> str | None:
    """The first executable file `name` in the ':'-separated search path, then in extra
    (an empty entry is the current directory); None if there is none."""
    for d in search.split(":") + list(extra):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def output(path: str, argv: list[str], *, stdin_null: bool = False,
           setsigdef: tuple[int, ...] = ()) -> tuple[int, bytes]:
    """Run path with argv, its stdout and stderr into one pipe (stdin /dev/null with
    stdin_null, else ours; the signals in setsigdef back to their default action, as
    subprocess's restore_signals): (exit code, everything it wrote). OSError when it cannot
    be started."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        file_actions: list[tuple] = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
        if stdin_null:
            file_actions.insert(0, (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        try:
            pid = os.posix_spawn(path, argv, os.environ, file_actions=file_actions,
                                 setsigdef=setsigdef)
        finally:
            os.close(w)
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)
