"""Logging as runc writes it: --log FILE, --log-format text|json (one object per line with
level, msg, time), --debug. Errors also go to stderr, one line.

Written directly, without the `logging` package: its import alone costs several ms on every
command (nor `os`: built-in modules only). `warning`/`info`/`debug` take printf-style
arguments as logging's methods do."""

import posix
import sys
import time

_fmt = "text"
_fd = -1
_debug = False


def _now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _line(level: str, msg: str) -> bytes:
    from pyoci import jsonio

    if _fmt == "json":
        return (jsonio.dumps({"level": level, "msg": msg, "time": _now()}) + "\n").encode()
    return f'time="{_now()}" level={level} msg={jsonio.dumps(msg)}\n'.encode()


def _emit(level: str, msg: str, args: tuple, to_stderr: bool) -> None:
    if args:
        msg = msg % args
    if _fd >= 0:
        try:
            posix.write(_fd, _line(level, msg))
        except OSError:
            pass
    elif to_stderr:
        sys.stderr.write(_line(level, msg).decode())


def setup(path: str | None, fmt: str = "text", debug: bool = False) -> None:
    global _fmt, _fd, _debug
    _fmt = fmt
    _debug = debug
    if path:
        try:
            _fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT
                             | posix.O_CLOEXEC,
                             0o600)
        except OSError as e:
            # as runc: a log that cannot be opened fails the command (exit 1, one line)
            _fd = -1
            from pyoci.errors import UsageError

            raise UsageError(f"--log: cannot open log file {path}: {e.strerror}") from None


def line(level: str, msg: str, *args: object) -> None:
    """A non-fatal line at level "error", "warning", "info" or "debug" (logging's methods)."""
    if level != "debug" or _debug:
        _emit(level, msg, args, level in ("error", "warning"))


def warning(msg: str, *args: object) -> None:
    """A warning: to the log file, else to stderr."""
    _emit("warning", msg, args, True)


def info(msg: str, *args: object) -> None:
    """Information: to the log file only."""
    _emit("info", msg, args, False)


def debug(msg: str, *args: object) -> None:
    """Debug output (with --debug): to the log file only."""
    if _debug:
        _emit("debug", msg, args, False)


def error(msg: str) -> None:
    """A fatal error: to the log file (if any) and, one line, to stderr."""
    if _fd >= 0:
        try:
            posix.write(_fd, _line("error", msg))
        except OSError:
            pass
    sys.stderr.write(f"pyoci: {msg}\n")
    sys.stderr.flush()
