"""runc-compatible command line: global flags before the command (`--flag value`,
`--flag=value`, one or two dashes, any order), then the command and its own flags.

Hand-written rather than argparse: every pyoci invocation pays for its start-up, and clients
call the runtime several times per container.
"""

from __future__ import annotations

import sys

from pyoci import SPEC_VERSION, __version__
from pyoci.errors import PyociError, UsageError

# flag name -> (canonical key, takes a value)
GLOBAL_FLAGS = {
    "root": ("root", True), "log": ("log", True), "log-format": ("log_format", True),
    "debug": ("debug", False), "systemd-cgroup": ("systemd_cgroup", False),
    "criu": ("criu", True), "rootless": ("rootless", True),
    "help": ("help", False), "h": ("help", False),
    "version": ("version", False), "v": ("version", False),
}

CREATE_FLAGS = {
    "bundle": ("bundle", True), "b": ("bundle", True),
    "console-socket": ("console_socket", True), "pid-file": ("pid_file", True),
    "no-pivot": ("no_pivot", False), "no-new-keyring": ("no_new_keyring", False),
    "preserve-fds": ("preserve_fds", True),
}
COMMANDS: dict[str, dict] = {
    "create": CREATE_FLAGS,
    "run": {**CREATE_FLAGS, "detach": ("detach", False), "d": ("detach", False),
            "keep": ("keep", False), "no-subreaper": ("no_subreaper", False)},
    "start": {},
    "state": {},
    "kill": {"all": ("all", False), "a": ("all", False)},
    "delete": {"force": ("force", False), "f": ("force", False)},
    "list": {"format": ("format", True), "f": ("format", True), "quiet": ("quiet", False),
             "q": ("quiet", False)},
    "spec": {"bundle": ("bundle", True), "b": ("bundle", True),
             "rootless": ("rootless", False)},
    "features": {},
}

# Commands implemented in their own modules: each module has COMMAND_FLAGS {command: flag
# table} and run_command(command, root, global_opts, opts, positionals) -> exit code. Only
# the module of the command being run is imported.
MODULE_COMMANDS = {
    "exec": "pyoci.ops.exec",
    "pause": "pyoci.ops", "resume": "pyoci.ops", "update": "pyoci.ops",
    "events": "pyoci.ops", "ps": "pyoci.ops",
    "checkpoint": "pyoci.criu", "restore": "pyoci.criu",
}

USAGE = f"""pyoci {__version__} - an OCI runtime (runtime-spec {SPEC_VERSION}), runc-compatible

usage: pyoci [global options] command [command options] [arguments...]

commands:
  create    create a container            run      create and start a container
  start     start a created container     state    output the state of a container
  kill      send a signal to the init     delete   delete a container
  list      list containers               spec     write a default config.json
  features  show the enabled features
  checkpoint  checkpoint a running container (CRIU)
  restore   restore a container from a checkpoint (CRIU)

global options:
  --root DIR           state directory (default /run/pyoci; $XDG_RUNTIME_DIR/pyoci for
                       a non-root user)
  --log FILE           log file          --log-format text|json
  --debug              debug logging     --systemd-cgroup  use the systemd cgroup driver
  --version, -v        print the version --help, -h        show this help
"""

_TRUE = {"true", "1", "yes", ""}


def parse_flags(args: list[str], table: dict, *, stop_at_positional: bool,
                max_positionals: int | None = None) -> tuple[dict, list]:
    """Parse flags from args; returns (options, remaining positionals). Flags may be repeated
    when the table marks them as lists (value type "list"): their values accumulate.
    With max_positionals=N, everything after the N-th positional is positional too."""
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if max_positionals is not None and len(rest) >= max_positionals:
            rest.extend(args[i:])
            break
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and a != "-":
            name, eq, value = a.lstrip("-").partition("=")
            if name not in table:
                raise UsageError(f"flag provided but not defined: {a.split('=')[0]}")
            key, takes = table[name]
            if takes:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise UsageError(f"flag needs an argument: {a}")
                    value = args[i]
                if takes == "list":
                    opts.setdefault(key, []).append(value)
                else:
                    opts[key] = value
            else:
                if eq and value.lower() not in _TRUE | {"false", "0", "no"}:
                    raise UsageError(f"invalid boolean value {value!r} for {a}")
                opts[key] = (not eq) or value.lower() in _TRUE
            i += 1
            continue
        if stop_at_positional:
            rest.extend(args[i:])
            break
        rest.append(a)
        i += 1
    return opts, rest


def _one_id(cmd: str, rest: list[str]) -> str:
    if len(rest) != 1:
        raise UsageError(f"{cmd}: expected exactly one container id, got {len(rest)}")
    return rest[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    gopts: dict = {}
    try:
        gopts, rest = parse_flags(argv, GLOBAL_FLAGS, stop_at_positional=True)
        from pyoci import log

        log.setup(gopts.get("log"), gopts.get("log_format", "text"), bool(gopts.get("debug")))
        if gopts.get("log_format", "text") not in ("text", "json"):
            raise UsageError(f"invalid log format {gopts['log_format']!r} (text or json)")
        if gopts.get("version"):
            print(f"pyoci version {__version__}\nspec: {SPEC_VERSION}")
            return 0
        if gopts.get("help") or not rest:
            sys.stdout.write(USAGE)
            return 0 if gopts.get("help") else 1
        cmd, cargs = rest[0], rest[1:]
        if cmd in MODULE_COMMANDS:
            # __import__ rather than importlib: importlib costs an import of its own
            mod = __import__(MODULE_COMMANDS[cmd], fromlist=["run_command"])
            table = mod.COMMAND_FLAGS[cmd]
        elif cmd in COMMANDS:
            mod, table = None, COMMANDS[cmd]
        else:
            raise UsageError(f"unknown command {cmd!r}")
        if "-h" in cargs or "--help" in cargs:
            sys.stdout.write(USAGE)
            return 0
        # exec and ps take the container's arguments after the id: stop at the 2nd positional
        opts, pos = parse_flags(cargs, table, stop_at_positional=False,
                                max_positionals=1 if cmd in ("exec", "ps") else None)
        if mod is not None:
            return mod.run_command(cmd, _root(gopts), gopts, opts, pos)
        return dispatch(cmd, gopts, opts, pos)
    except PyociError as e:
        from pyoci import log

        log.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - an internal error is still one line, exit 1
        from pyoci import log

        if gopts.get("debug"):
            import traceback

            traceback.print_exc()
        log.error(describe(e))
        return 1


def describe(e: BaseException) -> str:
    """One line for an exception no check turned into a PyociError: its cause in words (a
    file and the system's reason, a nesting too deep, a string the kernel cannot take),
    "internal error" only for what is a bug in pyoci."""
    import os

    if isinstance(e, OSError):
        what = f"{e.filename}: " if e.filename else ""
        msg = f"{what}{e.strerror or e}"
        if isinstance(e, PermissionError) and os.geteuid() != 0:
            msg += " (not running as root)"
    elif isinstance(e, RecursionError):
        msg = "a value is nested too deeply to be handled"
    elif isinstance(e, UnicodeError):
        msg = f"a string is not valid UTF-8: {e}"
    elif isinstance(e, ValueError) and "null byte" in str(e):
        msg = "a string contains a NUL byte (\\x00), which the kernel cannot take"
    else:
        msg = f"internal error: {type(e).__name__}: {e}"
    return msg.splitlines()[0] if msg else type(e).__name__


def _root(g: dict) -> str:
    if g.get("root"):
        return g["root"]
    from pyoci import state

    return state.default_root()


def rootless_cgroups(g: dict) -> bool:
    """--rootless true|false|auto (runc's): whether a cgroup the caller may not create or
    join is skipped instead of failing create. auto: with --systemd-cgroup no; else yes for
    a caller that is not root, or is root in a user namespace."""
    value = str(g.get("rootless", "auto")).lower()
    if value in ("true", "1", "t", "yes"):
        return True
    if value in ("false", "0", "f", "no"):
        return False
    if value != "auto":
        raise UsageError(f"invalid --rootless value {g.get('rootless')!r} (true, false or "
                         "auto)")
    if g.get("systemd_cgroup"):
        return False
    import os

    if os.geteuid() != 0:
        return True
    from pyoci import state

    return state.in_user_namespace()


def dispatch(cmd: str, g: dict, o: dict, pos: list[str]) -> int:
    root = _root(g)
    if cmd in ("create", "run"):
        from pyoci import container

        if g.get("systemd_cgroup"):
            pass  # the driver itself reports when systemd is unavailable
        try:
            preserve = int(o.get("preserve_fds", 0))
            if preserve < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--preserve-fds: invalid value {o.get('preserve_fds')!r}") \
                from None
        opts = container.CreateOptions(
            root=root, cid=_one_id(cmd, pos), bundle=o.get("bundle") or ".",
            pid_file=o.get("pid_file"), console_socket=o.get("console_socket"),
            no_pivot=bool(o.get("no_pivot")), no_new_keyring=bool(o.get("no_new_keyring")),
            preserve_fds=preserve, systemd_cgroup=bool(g.get("systemd_cgroup")),
            rootless_cgroups=rootless_cgroups(g),
            detach=True if cmd == "create" else bool(o.get("detach")),
            keep=cmd == "run" and bool(o.get("keep")))
        if cmd == "create":
            container.create(opts)
            return 0
        return container.run(opts)
    if cmd == "start":
        from pyoci import container

        container.start(root, _one_id(cmd, pos))
        return 0
    if cmd == "state":
        from pyoci import container, jsonio

        sys.stdout.write(jsonio.dumps(container.state_json(root, _one_id(cmd, pos)), indent=2)
                         + "\n")
        return 0
    if cmd == "kill":
        from pyoci import container

        if not pos or len(pos) > 2:
            raise UsageError("kill: usage: pyoci kill [--all] <container-id> [signal]")
        sig = container.parse_signal(pos[1] if len(pos) > 1 else None)
        container.kill(root, pos[0], sig, bool(o.get("all")))
        return 0
    if cmd == "delete":
        from pyoci import container

        container.delete(root, _one_id(cmd, pos), bool(o.get("force")))
        return 0
    if cmd == "list":
        return _list(root, o)
    if cmd == "spec":
        from pyoci.spec import default

        default.write_spec(o.get("bundle") or ".", bool(o.get("rootless")))
        return 0
    if cmd == "features":
        from pyoci import features, jsonio

        sys.stdout.write(jsonio.dumps(features.features(), indent=4) + "\n")
        return 0
    raise UsageError(f"unknown command {cmd!r}")


def _list(root: str, o: dict) -> int:
    from pyoci import container, jsonio

    fmt = o.get("format", "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"list: invalid format {fmt!r} (table or json)")
    states = container.list_states(root)
    if o.get("quiet"):
        for s in states:
            print(s["id"])
        return 0
    if fmt == "json":
        print(jsonio.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("".join(c.ljust(w + 4) for c, w in zip(r[:-1], widths)) + r[-1])
    return 0
