"""Logging as runc writes it: --log FILE, --log-format text|json (one object per line with
level, msg, time), --debug. Errors also go to stderr, one line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_fmt = "text"
_fd = -1


def _now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _line(level: str, msg: str) -> bytes:
    if _fmt == "json":
        return (json.dumps({"level": level, "msg": msg, "time": _now()}) + "\n").encode()
    return f'time="{_now()}" level={level} msg={json.dumps(msg)}\n'.encode()


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = {"WARNING": "warning", "ERROR": "error", "DEBUG": "debug",
                 "INFO": "info", "CRITICAL": "fatal"}.get(record.levelname, "info")
        msg = record.getMessage()
        if _fd >= 0:
            try:
                os.write(_fd, _line(level, msg))
            except OSError:
                pass
        elif record.levelno >= logging.WARNING:
            sys.stderr.write(_line(level, msg).decode())


def setup(path: str | None, fmt: str = "text", debug: bool = False) -> None:
    global _fmt, _fd
    _fmt = fmt
    if path:
        try:
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            sys.stderr.write(f"pyoci: cannot open log file {path}: {e.strerror}\n")
            _fd = -1
    logger = logging.getLogger("pyoci")
    logger.handlers[:] = [_Handler()]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def error(msg: str) -> None:
    """A fatal error: to the log file (if any) and, one line, to stderr."""
    if _fd >= 0:
        try:
            os.write(_fd, _line("error", msg))
        except OSError:
            pass
    sys.stderr.write(f"pyoci: {msg}\n")
    sys.stderr.flush()
