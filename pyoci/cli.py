"""runc-compatible command line: global flags before the command (`--flag value`,
`--flag=value`, one or two dashes, any order), then the command and its own flags.

Hand-written rather than argparse: every pyoci invocation pays for its start-up, and clients
call the runtime several times per container.
"""

import sys

from pyoci import SPEC_VERSION, __version__

# --- the one flag table -----------------------------------------------------------------------
# command -> (arguments, summary, flags); a flag is (names, key, takes, help): takes False (a
# boolean), True (a value) or "list" (a value, repeatable). "" is the global flags. The
# parser's lookups (GLOBAL_FLAGS, flags(cmd)), `pyoci --help` and `pyoci COMMAND --help` are
# all built from it.
_CREATE = (
    (("bundle", "b"), "bundle", True, "path to the root of the bundle directory, defaults to "
     "the current directory"),
    (("console-socket",), "console_socket", True, "path to an AF_UNIX socket which will "
     "receive a file descriptor referencing the master end of the console's pseudoterminal"),
    (("pid-file",), "pid_file", True, "specify the file to write the process id to"),
    (("no-pivot",), "no_pivot", False, "do not use pivot root to jail process inside rootfs"),
    (("no-new-keyring",), "no_new_keyring", False, "do not create a new session keyring for "
     "the container"),
    (("preserve-fds",), "preserve_fds", True, "pass N additional file descriptors to the "
     "container (stdio + $LISTEN_FDS + N in total)"),
)
_CRIU_COMMON = (
    (("image-path",), "image_path", True, "path for saving criu image files"),
    (("work-path",), "work_path", True, "path for saving work files and logs"),
    (("tcp-established",), "tcp_established", False, "allow open tcp connections"),
    (("ext-unix-sk",), "ext_unix_sk", False, "allow external unix sockets"),
    (("shell-job",), "shell_job", False, "allow shell jobs"),
    (("file-locks",), "file_locks", False, "handle file locks, for safety"),
    (("manage-cgroups-mode",), "manage_cgroups_mode", True, "cgroups mode: soft, full, "
     "strict, ignore"),
    (("empty-ns",), "empty_ns", True, "create a namespace, but don't restore its properties"),
    (("auto-dedup",), "auto_dedup", False, "enable auto deduplication of memory images"),
    (("lazy-pages",), "lazy_pages", False, "use userfaultfd to lazily restore memory pages"),
)
_UPDATE_VALUES = (
    ("blkio-weight", "specifies per cgroup weight, range is from 10 to 1000"),
    ("cpu-period", "CPU CFS period to be used for hardcapping (in usecs). 0 to use system "
     "default"),
    ("cpu-quota", "CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period"),
    ("cpu-share", "CPU shares (relative weight vs. other containers)"),
    ("cpu-rt-period", "CPU realtime period to be used for hardcapping (in usecs). 0 to use "
     "system default"),
    ("cpu-rt-runtime", "CPU realtime hardcap limit (in usecs). Allowed cpu time in a given "
     "period"),
    ("cpuset-cpus", "CPU(s) to use"),
    ("cpuset-mems", "Memory node(s) to use"),
    ("memory", "Memory limit (in bytes)"),
    ("memory-reservation", "Memory reservation or soft_limit (in bytes)"),
    ("memory-swap", "Total memory usage (memory + swap); set '-1' to enable unlimited swap"),
    ("kernel-memory", "(obsoleted; do not use)"),
    ("kernel-memory-tcp", "(obsoleted; do not use)"),
    ("pids-limit", "Maximum number of pids allowed in the container"),
    ("l3-cache-schema", "The string of Intel RDT/CAT L3 cache schema"),
    ("mem-bw-schema", "The string of Intel RDT/MBA memory bandwidth schema"),
)
_ID = "<container-id>"

TABLE: dict[str, tuple[str, str, tuple]] = {
    "": ("command [command options] [arguments...]", "an OCI runtime, runc-compatible", (
        (("debug",), "debug", False, "enable debug logging"),
        (("log",), "log", True, "set the log file to write pyoci logs to (default is "
         "stderr)"),
        (("log-format",), "log_format", True, "set the log format ('text' (default), or "
         "'json')"),
        (("root",), "root", True, "root directory for storage of container state (default "
         "{root}; $XDG_RUNTIME_DIR/pyoci for a user that is not root)"),
        (("criu",), "criu", True, "path to the criu binary used for checkpoint and restore "
         "(default: \"criu\")"),
        (("systemd-cgroup",), "systemd_cgroup", False, "enable systemd cgroup support, "
         "expects cgroupsPath to be of form \"slice:prefix:name\" for e.g. "
         "\"system.slice:runc:434234\""),
        (("rootless",), "rootless", True, "ignore cgroup permission errors ('true', 'false', "
         "or 'auto') (default: \"auto\")"),
        (("help", "h"), "help", False, "show help"),
        (("version", "v"), "version", False, "print the version"),
    )),
    "checkpoint": (_ID, "checkpoint a running container (CRIU)", _CRIU_COMMON + (
        (("parent-path",), "parent_path", True, "path for previous criu image files in "
         "pre-dump"),
        (("leave-running",), "leave_running", False, "leave the process running after "
         "checkpointing"),
        (("pre-dump",), "pre_dump", False, "dump container's memory information only, leave "
         "the container running after this"),
        (("page-server",), "page_server", True, "ADDRESS:PORT of the page server"),
        (("status-fd",), "status_fd", True, "criu writes \\0 to this FD once lazy-pages is "
         "ready"),
    )),
    "create": (_ID, "create a container", _CREATE),
    "delete": (_ID, "delete any resources held by the container (often used with detached "
               "containers)", (
        (("force", "f"), "force", False, "forcibly delete the container if it is still "
         "running (uses SIGKILL)"),
    )),
    "events": (_ID, "display container events such as OOM notifications, cpu, memory, and "
               "IO usage statistics", (
        (("interval",), "interval", True, "set the stats collection interval (default: 5s)"),
        (("stats",), "stats", False, "display the container's stats then exit"),
    )),
    "exec": (_ID + " <command> [command options]", "execute new process inside the "
             "container", (
        (("console-socket",), "console_socket", True, "path to an AF_UNIX socket which will "
         "receive a file descriptor referencing the master end of the console's "
         "pseudoterminal"),
        (("cwd",), "cwd", True, "current working directory in the container"),
        (("env", "e"), "env", "list", "set environment variables"),
        (("tty", "t"), "tty", False, "allocate a pseudo-TTY"),
        (("user", "u"), "user", True, "UID (format: <uid>[:<gid>])"),
        (("additional-gids", "g"), "additional_gids", "list", "additional gids"),
        (("process", "p"), "process", True, "path to the process.json"),
        (("detach", "d"), "detach", False, "detach from the container's process"),
        (("pid-file",), "pid_file", True, "specify the file to write the process id to"),
        (("process-label",), "process_label", True, "set the asm process label for the "
         "process commonly used with selinux"),
        (("apparmor",), "apparmor", True, "set the apparmor profile for the process"),
        (("no-new-privs",), "no_new_privs", False, "set the no new privileges value for the "
         "process"),
        (("cap", "c"), "cap", "list", "add a capability to the bounding set for the process"),
        (("preserve-fds",), "preserve_fds", True, "pass N additional file descriptors to the "
         "container (stdio + $LISTEN_FDS + N in total)"),
        (("ignore-paused",), "ignore_paused", False, "allow exec in a paused container"),
    )),
    "features": ("", "show the enabled features", ()),
    "kill": (_ID + " [signal]", "kill sends the specified signal (default: SIGTERM) to the "
             "container's init process", (
        (("all", "a"), "all", False, "send the specified signal to all processes inside the "
         "container"),
    )),
    "list": ("", "lists containers started by pyoci with the given root", (
        (("format", "f"), "format", True, "select one of: table or json (default: \"table\")"),
        (("quiet", "q"), "quiet", False, "display only container IDs"),
    )),
    "pause": (_ID, "pause suspends all processes inside the container", ()),
    "ps": (_ID + " [ps options]", "ps displays the processes running inside a container", (
        (("format", "f"), "format", True, "select one of: table or json (default: \"table\")"),
    )),
    "restore": (_ID, "restore a container from a previous checkpoint (CRIU)", _CRIU_COMMON + (
        (("bundle", "b"), "bundle", True, "path to the root of the bundle directory"),
        (("console-socket",), "console_socket", True, "path to an AF_UNIX socket which will "
         "receive a file descriptor referencing the master end of the console's "
         "pseudoterminal"),
        (("detach", "d"), "detach", False, "detach from the container's process"),
        (("pid-file",), "pid_file", True, "specify the file to write the process id to"),
        (("no-subreaper",), "no_subreaper", False, "disable the use of the subreaper used to "
         "reap reparented processes"),
        (("no-pivot",), "no_pivot", False, "do not use pivot root to jail process inside "
         "rootfs"),
    )),
    "resume": (_ID, "resumes all processes that have been previously paused", ()),
    "run": (_ID, "create and run a container", _CREATE + (
        (("detach", "d"), "detach", False, "detach from the container's process"),
        (("keep",), "keep", False, "do not delete the container after it exits"),
        (("no-subreaper",), "no_subreaper", False, "disable the use of the subreaper used to "
         "reap reparented processes"),
    )),
    "spec": ("", "create a new specification file (config.json)", (
        (("bundle", "b"), "bundle", True, "path to the root of the bundle directory"),
        (("rootless",), "rootless", False, "generate a configuration for a rootless "
         "container"),
    )),
    "start": (_ID, "executes the user defined process in a created container", ()),
    "state": (_ID, "output the state of a container", ()),
    "update": (_ID, "update container resource constraints", (
        (("resources", "r"), "resources", True, "path to the file containing the resources "
         "to update or '-' to read from the standard input"),
    ) + tuple(((name,), name, True, text) for name, text in _UPDATE_VALUES)),
}

_HELP = ((("help", "h"), "help", False, "show help"),)


def _usage_error(msg: str) -> Exception:
    """UsageError(msg): pyoci.errors is imported when an error is raised, not before (a
    successful lifecycle command never loads it)."""
    from pyoci.errors import UsageError

    return UsageError(msg)


def _lookup(flags: tuple) -> dict:
    """name -> (key, takes) of a flag list, as parse_flags reads them."""
    return {name: (key, takes) for names, key, takes, _help in flags for name in names}


GLOBAL_FLAGS = _lookup(TABLE[""][2])
_flags: dict[str, dict] = {}


def flags(cmd: str) -> dict:
    """The parser's lookup of a command's flags (name -> (key, takes)), --help included;
    built for the command being run only (all of them cost ~0.1 ms at every start)."""
    table = _flags.get(cmd)
    if table is None:
        table = _flags[cmd] = _lookup(TABLE[cmd][2] + _HELP)
    return table


def usage() -> str:
    """`pyoci --help`: the commands and the global flags."""
    from pyoci.state import DEFAULT_ROOT

    width = max(len(c) for c in TABLE)
    cmds = "".join(f"   {c.ljust(width)}  {v[1]}\n" for c, v in sorted(TABLE.items()) if c)
    return (f"NAME:\n   pyoci {__version__} - an OCI runtime (runtime-spec {SPEC_VERSION}), "
            f"runc-compatible\n\nUSAGE:\n   pyoci [global options] {TABLE[''][0]}\n\n"
            f"COMMANDS:\n{cmds}\nGLOBAL OPTIONS:\n"
            + _options(TABLE[""][2]).replace("{root}", DEFAULT_ROOT))


def command_usage(cmd: str) -> str:
    """`pyoci COMMAND --help`: that command's usage and its own flags, as runc prints them."""
    args, summary, flags = TABLE[cmd]
    opts = " [command options]" if flags else ""
    return (f"NAME:\n   pyoci {cmd} - {summary}\n\nUSAGE:\n   pyoci {cmd}{opts}"
            f"{' ' + args if args else ''}\n\nOPTIONS:\n" + _options(flags + _HELP))


def _options(flags: tuple) -> str:
    rows = [(", ".join(("-" if len(n) == 1 else "--") + n + (" value" if takes else "")
                       for n in names), text) for names, _key, takes, text in flags]
    width = max(len(r[0]) for r in rows)
    return "".join(f"   {a.ljust(width)}  {b}\n" for a, b in rows)


def command_word(argv: list[str]) -> str | None:
    """The command word after the global flags (None if there is none): what the launcher
    looks at before anything else is imported."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if not a.startswith("-") or a == "-":
            return a
        name, eq, _ = a.lstrip("-").partition("=")
        takes = GLOBAL_FLAGS.get(name, ("", False))[1]
        i += 2 if takes and not eq else 1
    return None


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
                raise _usage_error(f"flag provided but not defined: {a.split('=')[0]}")
            key, takes = table[name]
            if takes:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise _usage_error(f"flag needs an argument: {a}")
                    value = args[i]
                if takes == "list":
                    opts.setdefault(key, []).append(value)
                else:
                    opts[key] = value
            else:
                if eq and value.lower() not in _TRUE | {"false", "0", "no"}:
                    raise _usage_error(f"invalid boolean value {value!r} for {a}")
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
        raise _usage_error(f"{cmd}: expected exactly one container id, got {len(rest)}")
    return rest[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    gopts: dict = {}
    try:
        gopts, rest = parse_flags(argv, GLOBAL_FLAGS, stop_at_positional=True)
        if gopts.get("log") or gopts.get("log_format", "text") != "text" or gopts.get("debug"):
            from pyoci import log   # (its defaults otherwise: imported by the first message)

            log.setup(gopts.get("log"), gopts.get("log_format", "text"),
                      bool(gopts.get("debug")))
        if gopts.get("log_format", "text") not in ("text", "json"):
            raise _usage_error(f"invalid log format {gopts['log_format']!r} (text or json)")
        if gopts.get("version"):
            print(f"pyoci version {__version__}\nspec: {SPEC_VERSION}")
            return 0
        if gopts.get("help") or not rest:
            sys.stdout.write(usage())
            return 0 if gopts.get("help") else 1
        cmd, cargs = rest[0], rest[1:]
        if cmd not in TABLE or not cmd:
            raise _usage_error(f"unknown command {cmd!r}")
        # exec and ps take the container's arguments after the id: stop at the 2nd positional
        opts, pos = parse_flags(cargs, flags(cmd), stop_at_positional=False,
                                max_positionals=1 if cmd in ("exec", "ps") else None)
        if opts.pop("help", False):
            sys.stdout.write(command_usage(cmd))
            return 0
        return dispatch(cmd, gopts, opts, pos)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - an internal error is still one line, exit 1
        from pyoci import log
        from pyoci.errors import PyociError

        if isinstance(e, PyociError):
            log.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
            return e.exit_code
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
        raise _usage_error(f"invalid --rootless value {g.get('rootless')!r} (true, false or "
                         "auto)")
    if g.get("systemd_cgroup"):
        return False
    import os

    if os.geteuid() != 0:
        return True
    from pyoci import state

    return state.in_user_namespace()


def _exactly_one(cmd: str, pos: list[str]) -> str:
    if len(pos) != 1:
        raise _usage_error(f'"{cmd}" requires exactly 1 argument(s)')
    return pos[0]


def dispatch(cmd: str, g: dict, o: dict, pos: list[str]) -> int:
    """Run command `cmd` with its parsed flags `o` and positionals `pos`: each operation's
    module is imported only when it runs."""
    root = _root(g)
    if cmd == "state":
        from pyoci.ops import state

        return state.run(root, _one_id(cmd, pos))
    if cmd == "start":
        from pyoci.ops import start

        return start.run(root, _one_id(cmd, pos))
    if cmd == "kill":
        if not pos or len(pos) > 2:
            raise _usage_error("kill: usage: pyoci kill [--all] <container-id> [signal]")
        from pyoci.ops import kill

        return kill.run(root, pos[0], pos[1] if len(pos) > 1 else None, bool(o.get("all")))
    if cmd == "delete":
        from pyoci.ops import delete

        return delete.run(root, _one_id(cmd, pos), bool(o.get("force")))
    if cmd in ("pause", "resume"):
        from pyoci.ops import pause

        return pause.run(cmd, root, _exactly_one(cmd, pos))
    if cmd == "update":
        from pyoci.ops import update

        return update.run(root, _exactly_one(cmd, pos), o)
    if cmd == "events":
        from pyoci.ops import events

        return events.run(root, _exactly_one(cmd, pos), bool(o.get("stats")),
                          o.get("interval", "5s"))
    if cmd == "ps":
        if not pos:
            raise _usage_error('"ps" requires a minimum of 1 argument(s)')
        from pyoci.ops import ps

        return ps.run(root, pos[0], o.get("format", "table"), pos[1:])
    if cmd == "list":
        from pyoci.ops import list as list_op

        return list_op.run(root, o.get("format", "table"), bool(o.get("quiet")))
    if cmd in ("create", "run"):
        return _create(cmd, g, o, pos, root)
    if cmd == "exec":
        from pyoci.ops import exec as exec_op

        return exec_op.run_command(cmd, root, g, o, pos)
    if cmd in ("checkpoint", "restore"):
        from pyoci import criu

        return criu.run_command(cmd, root, g, o, pos)
    if cmd == "spec":
        from pyoci.spec import default

        default.write_spec(o.get("bundle") or ".", bool(o.get("rootless")))
        return 0
    if cmd == "features":
        from pyoci import features, jsonio

        sys.stdout.write(jsonio.dumps(features.features(), indent=4) + "\n")
        return 0
    raise _usage_error(f"unknown command {cmd!r}")


def _create(cmd: str, g: dict, o: dict, pos: list[str], root: str) -> int:
    from pyoci.ops import create

    try:
        preserve = int(o.get("preserve_fds", 0))
        if preserve < 0:
            raise ValueError
    except ValueError:
        raise _usage_error(f"--preserve-fds: invalid value {o.get('preserve_fds')!r}") \
            from None
    opts = create.CreateOptions(
        root=root, cid=_one_id(cmd, pos), bundle=o.get("bundle") or ".",
        pid_file=o.get("pid_file"), console_socket=o.get("console_socket"),
        no_pivot=bool(o.get("no_pivot")), no_new_keyring=bool(o.get("no_new_keyring")),
        preserve_fds=preserve, systemd_cgroup=bool(g.get("systemd_cgroup")),
        rootless_cgroups=rootless_cgroups(g),
        detach=True if cmd == "create" else bool(o.get("detach")),
        keep=cmd == "run" and bool(o.get("keep")))
    if cmd == "create":
        create.create(opts)
        return 0
    from pyoci.ops import run

    return run.run(opts)
