"""The `pyoci` command's entry (the installed command's Python part, see setup.py): for
`exec`, the sealed re-execution (pyoci.linux.sealed) before anything else; for `create`,
`run` and `exec`, the cgroup-attach warm-up (pyoci/warmup.py) while the rest is imported;
then pyoci.cli.main; then exit without the interpreter's teardown.

Every command goes through pyoci.cli and pyoci/ops: the lifecycle commands (`state`,
`start`, `kill`, `delete`, `pause`, `resume`) run on built-in modules only there, so this
module only adds what must happen before the first import.
"""

import posix
import sys

launched = False   # this process is the `pyoci` command's (pyoci.linux.sealed may re-execute it)

_WARM = ("create", "run", "exec")   # they move a process into a cgroup ~15 ms from here


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from pyoci import cli

    cmd = cli.command_word(argv)
    if launched and cmd == "exec":
        try:    # before anything else: everything done until the execve is done twice
            from pyoci.linux import sealed

            sealed.reexec()
        except Exception:  # noqa: BLE001 - pyoci.ops.exec tries again, says why
            pass
    warm = cmd in _WARM and "--help" not in argv and "-h" not in argv
    if warm:
        # The first cgroup move after a quiet spell waits for an RCU grace period (10-18
        # ms, runc waits as long): start that wait now, with a placeholder in a scratch
        # cgroup of pyoci's own (never a write into a cgroup pyoci did not create).
        from pyoci import warmup

        warmup.start()
    try:
        return cli.main(argv)
    finally:
        if warm:
            from pyoci import warmup

            warmup.finish()


def launch() -> None:
    """The console script: main(), then exit without the interpreter's teardown (module
    and object finalisation: ~5 ms after a `run`). Every file pyoci writes is closed by
    then; only stdio may hold buffered output."""
    global launched
    launched = True
    try:
        rc = main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    posix._exit(rc & 0xFF if isinstance(rc, int) else 1)
