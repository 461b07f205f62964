"""pyoci.linux.spawn, the helper-program runner of criu and newuidmap/newgidmap: what it
finds on a search path, and what a program writes to stdout and stderr, read back."""

from __future__ import annotations

import os

import pytest

from pyoci.linux import spawn


def test_find_searches_the_path_then_the_extra_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "tool").write_text("#!/bin/sh\n")           # not executable: skipped
    (b / "tool").write_text("#!/bin/sh\n")
    os.chmod(b / "tool", 0o755)
    (a / "dir").mkdir()                               # a directory is no program
    assert spawn.find("tool", str(a)) is None
    assert spawn.find("tool", f"{a}:{b}") == str(b / "tool")
    assert spawn.find("tool", "", (str(a), str(b))) == str(b / "tool")
    assert spawn.find("dir", str(a)) is None
    assert spawn.find("nope", f"{a}:{b}") is None


def test_output_reads_stdout_and_stderr_and_the_exit_code():
    code, out = spawn.output("/bin/sh", ["sh", "-c", "echo one; echo two >&2; exit 3"])
    assert code == 3
    assert out == b"one\ntwo\n"
    code, out = spawn.output("/bin/sh", ["sh", "-c", "kill -TERM $$"])
    assert code == -15 and out == b""


def test_output_stdin_is_dev_null_when_asked():
    r, w = os.pipe()
    saved = os.dup(0)
    try:
        os.dup2(r, 0)
        os.write(w, b"ours\n")
        os.close(w)
        w = -1
        assert spawn.output("/bin/sh", ["sh", "-c", "cat"], stdin_null=True) == (0, b"")
        assert spawn.output("/bin/sh", ["sh", "-c", "cat"]) == (0, b"ours\n")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(r)
        if w >= 0:
            os.close(w)


def test_output_raises_when_the_program_cannot_start(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        spawn.output(str(tmp_path / "missing"), ["missing"])
    assert set(os.listdir("/proc/self/fd")) == before      # the pipe is closed
