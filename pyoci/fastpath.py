"""The launcher's entry: the common case of `state`, `start`, `kill`, `delete`, `pause` and
`resume` on built-in modules only; for `create`, `run` and `exec` the cgroup-attach warm-up
(pyoci/warmup.py) before anything else is imported; then pyoci.cli for the rest.

Clients (containerd, podman/conmon) call these per container, often several times, and for
them the interpreter's start-up is most of the cost: importing `os`, `json`, `signal`, `re`,
`dataclasses` or `typing` would each cost about as much as the command's work itself. This
module uses only what a bare `python -I -S` has already loaded or builds in (`posix`, `sys`,
`time`, `_signal`, `fcntl`), plus pyoci.jsonio (json on `_json`, shared with the rest of
pyoci) and pyoci.cgstate (the shape of a state's cgroup, shared with pyoci.state), and
mirrors pyoci.state / pyoci.container for the plain path: a valid id and state.json, no hooks
to run, no flags beyond `--force`.

Anything else (an error to report, hooks, `kill --all`, a paused or possibly paused
container, an unusual cgroup) raises `_Fallback` *before* anything was changed, and
pyoci.cli handles the command from the start, so its behaviour and messages stay the only
reference. Keep the mirrored pieces in step with pyoci/state.py (public_state, proc_stat,
status) and pyoci/container.py (start, kill, delete).
"""

import posix
import sys
import time

_O_RDONLY, _O_WRONLY, _O_NONBLOCK, _O_CLOEXEC = 0, 1, 0o4000, 0o2000000
_O_DIRECTORY, _O_APPEND, _O_CREAT, _O_NOFOLLOW = 0o200000, 0o2000, 0o100, 0o400000
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
_GLOBAL_VALUE_FLAGS = {"root": "root", "log": "log", "log-format": "log_format"}
_GLOBAL_BOOL_FLAGS = ("debug", "systemd-cgroup")
_CMD_BOOL_FLAGS = {"delete": ("force", "f")}


class _Fallback(Exception):
    """Not the common case: let pyoci.cli handle the command (nothing was done yet)."""


def launch() -> None:
    """The launcher's entry: main(), then exit without the interpreter's teardown (module
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


launched = False   # this process is the `pyoci` command's (pyoci.linux.sealed may re-execute it)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pyoci` launcher: the fast path, else pyoci.cli.main."""
    argv = sys.argv[1:] if argv is None else argv
    if launched and _command(argv) == "exec":
        try:    # before anything else: everything done until the execve is done twice
            from pyoci.linux import sealed

            sealed.reexec()
        except Exception:  # noqa: BLE001 - pyoci.ops.exec tries again and reports why
            pass
    try:
        return _fast(argv)
    except _Reported as r:
        return _report(r.args[0])
    except _Fallback as f:
        if f.args and "--help" not in argv and "-h" not in argv:
            from pyoci import warmup   # create/run join a cgroup in ~15 ms: warm it up

            warmup.start()
            _warm.append(1)
    except Exception:  # noqa: BLE001 - anything odd: the full implementation decides
        pass
    from pyoci.cli import main as cli_main

    try:
        return cli_main(argv)
    finally:
        if _warm:
            from pyoci import warmup

            warmup.finish()


_warm: list = []    # a cgroup-attach warm-up was started (pyoci.warmup)


_log_args: list = [None, "text", False]   # pyoci.log.setup's, once the flags are parsed


def _default_root() -> str:
    """pyoci.state.default_root (runc's rule): $XDG_RUNTIME_DIR/pyoci for a caller that is
    not root, or is euid 0 in a user namespace with $USER other than "root"."""
    xdg = posix.environ.get(b"XDG_RUNTIME_DIR")
    if not xdg:
        return "/run/pyoci"
    xdg = xdg.decode(sys.getfilesystemencoding(), "surrogateescape")
    if posix.geteuid() != 0:
        return xdg + "/pyoci"
    try:
        fd = posix.open("/proc/self/uid_map", _O_RDONLY | _O_CLOEXEC)
        try:
            initial = posix.read(fd, 4096).split() == [b"0", b"0", b"4294967295"]
        finally:
            posix.close(fd)
    except OSError:
        initial = True
    if initial or posix.environ.get(b"USER", b"") == b"root":
        return "/run/pyoci"
    return xdg + "/pyoci"


def _fast(argv: list[str]) -> int:
    _exec_warmup(argv)
    gopts, cmd, opts, pos = _parse(argv)
    root = gopts.get("root") or _default_root()
    if gopts.get("log_format", "text") not in ("text", "json"):
        raise _Fallback
    log = gopts.get("log")
    if log:   # as pyoci.log.setup: the log file exists after any command
        try:
            posix.close(posix.open(log, _O_WRONLY | _O_APPEND | _O_CREAT | _O_CLOEXEC, 0o600))
        except OSError:
            raise _Fallback from None
    _log_args[:] = [log, gopts.get("log_format", "text"), bool(gopts.get("debug"))]
    if cmd == "state":
        if len(pos) != 1:
            raise _Fallback
        return _state(root, pos[0])
    if cmd == "start":
        if len(pos) != 1:
            raise _Fallback
        return _start(root, pos[0])
    if cmd == "kill":
        if not 1 <= len(pos) <= 2:
            raise _Fallback
        return _kill(root, pos[0], _signal_number(pos[1] if len(pos) > 1 else None))
    if cmd == "delete":
        if len(pos) != 1:
            raise _Fallback
        return _delete(root, pos[0])
    if cmd in ("pause", "resume") and not opts:
        if len(pos) != 1:
            raise _Fallback
        return _pause(root, pos[0], cmd == "pause")
    raise _Fallback


def _log():
    """pyoci.log, set up as pyoci.cli would have (for warnings and errors)."""
    from pyoci import log

    log.setup(*_log_args)
    return log


def _report(e) -> int:
    """pyoci.cli.main's report of a PyociError: one line, its exit code."""
    _log().error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return e.exit_code


def _parse(argv: list[str]) -> tuple[dict, str, dict, list[str]]:
    """The subset of pyoci.cli's grammar the fast path takes; anything else falls back."""
    gopts: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name, eq, value = argv[i].lstrip("-").partition("=")
        if name in _GLOBAL_VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise _Fallback
                value = argv[i]
            gopts[_GLOBAL_VALUE_FLAGS[name]] = value
        elif name in _GLOBAL_BOOL_FLAGS and not eq:
            gopts[name] = True
        else:
            raise _Fallback
        i += 1
    if i >= len(argv):
        raise _Fallback
    cmd = argv[i]
    if cmd in ("create", "run"):
        raise _Fallback(cmd)
    opts: dict = {}
    pos: list[str] = []
    for a in argv[i + 1:]:
        if a.startswith("-"):
            if a.lstrip("-") not in _CMD_BOOL_FLAGS.get(cmd, ()) or a.startswith("---"):
                raise _Fallback
            opts["force"] = True
        else:
            pos.append(a)
    return gopts, cmd, opts, pos


# --- state.json, /proc ----------------------------------------------------------------------

def _read(path: str, regular: bool = False) -> bytes:
    """path's contents; regular=True (state files): never blocking on a FIFO, never
    following a symlink, a regular file only (else OSError: pyoci.cli reports it)."""
    if regular:
        fd = posix.open(path, _O_RDONLY | _O_CLOEXEC | _O_NONBLOCK | _O_NOFOLLOW)
        if posix.fstat(fd).st_mode & 0o170000 != 0o100000:
            posix.close(fd)
            raise OSError("not a regular file")
    else:
        fd = posix.open(path, _O_RDONLY | _O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = posix.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        posix.close(fd)


def _check_id(cid: str) -> None:
    if not cid or cid in (".", "..") or len(cid) > 1024 or not _ID_CHARS.issuperset(cid):
        raise _Fallback


def _load(root: str, cid: str) -> tuple[str, dict]:
    """(container directory, state.json) or _Fallback (unknown id, corrupt state...)."""
    _check_id(cid)
    d = f"{root}/{cid}" if not root.endswith("/") else root + cid
    from pyoci import jsonio

    try:
        doc = jsonio.loads(_read(d + "/state.json", regular=True))
    except (OSError, ValueError, RecursionError):   # unreadable or corrupt: pyoci.cli says
        raise _Fallback from None
    if not isinstance(doc, dict) or doc.get("id") != cid \
            or not isinstance(doc.get("bundle"), str) or "creating" in doc:
        raise _Fallback     # (a create under way or killed: pyoci.state decides)
    # anything pyoci.state.check_state_doc would refuse: it reports which field
    for key in ("pid", "startTime"):
        v = doc.get(key, 0)
        if type(v) is not int or not 0 <= v < 1 << 63:
            raise _Fallback
    for key, typ in _STATE_TYPES:
        v = doc.get(key)
        if (v is not None or key in doc and typ is not dict) and not isinstance(v, typ):
            raise _Fallback
    for key in ("annotations", "namespaces"):
        for v in (doc.get(key) or {}).values():
            if not isinstance(v, str):
                raise _Fallback
    if doc.get("cgroup") is not None:
        from pyoci import cgstate

        if cgstate.problem(doc["cgroup"]):
            raise _Fallback
    return d, doc


_STATE_TYPES = (("rootfs", str), ("created", str), ("owner", str), ("ociVersion", str),
                ("annotations", dict), ("cgroup", dict), ("namespaces", dict),
                ("started", bool))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        data = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[19])


def _init_alive(doc: dict) -> bool:
    pid = doc.get("pid", 0)
    if pid <= 0:
        return False
    ps = _proc_stat(pid)
    return ps is not None and ps[1] == doc.get("startTime", 0) and ps[0] not in ("Z", "X", "x")


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def _status(d: str, doc: dict) -> str:
    if not _init_alive(doc):
        return "stopped"
    if doc.get("cgroup") and _maybe_frozen(doc["cgroup"]):
        raise _Fallback   # paused, or a cgroup this path does not read: pyoci.state decides
    if _exists(d + "/exec.fifo"):
        return "created"
    return "running"


def _maybe_frozen(cg: dict) -> bool:
    """False when the container's cgroup is certainly not frozen (the drivers' frozen())."""
    try:
        driver = cg.get("driver")
        if driver == "v1":
            freezer = (cg.get("paths") or {}).get("freezer")
            if freezer:
                return _read_opt(freezer + "/freezer.state") not in (None, "THAWED")
            if cg.get("unified"):
                events = _read_opt(cg["unified"] + "/cgroup.events")
                return events is not None and "frozen 0" not in events.splitlines()
            return False
        if driver == "v2":
            return _read_opt(cg["path"] + "/cgroup.freeze") == "1"
    except (OSError, TypeError, AttributeError, KeyError):
        pass
    return True


def _read_opt(path: str) -> str | None:
    try:
        return _read(path).decode().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _public_state(doc: dict, status: str) -> dict:
    """pyoci.state.public_state of the stored state."""
    d = {
        "ociVersion": doc.get("ociVersion", "1.3.0"), "id": doc["id"],
        "pid": doc.get("pid", 0) if status != "stopped" else 0,
        "status": status, "bundle": doc["bundle"], "rootfs": doc.get("rootfs", ""),
        "created": doc.get("created", ""), "owner": doc.get("owner", ""),
    }
    if doc.get("annotations"):
        d["annotations"] = doc["annotations"]
    return d


def _dumps(obj) -> str:
    """json.dumps(obj, indent=2), as pyoci.cli prints a state."""
    from pyoci import jsonio

    return jsonio.dumps(obj, indent=2)


def _lock(d: str) -> int:
    """pyoci.state.Lock: an exclusive flock on the container directory (fd to close)."""
    import fcntl

    try:
        fd = posix.open(d, _O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        raise _Fallback from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _config_mentions(d: str, key: bytes) -> bool:
    """Whether the stored config.json may have this hook (a cheap, conservative test)."""
    try:
        return key in _read(d + "/config.json")
    except OSError:
        return False   # as pyoci.container: an unreadable config has no hooks


# --- commands -------------------------------------------------------------------------------

def _state(root: str, cid: str) -> int:
    d, doc = _load(root, cid)
    out = _dumps(_public_state(doc, _status(d, doc))) + "\n"
    sys.stdout.write(out)
    return 0


def _start(root: str, cid: str) -> int:
    d, doc = _load(root, cid)
    if _config_mentions(d, b'"poststart"'):
        raise _Fallback
    fd = _lock(d)
    try:
        if _status(d, doc) != "created":
            raise _Fallback
        _release(d, doc)
    finally:
        posix.close(fd)
    return 0


def _release(d: str, doc: dict) -> None:
    """pyoci.container._release: open exec.fifo, read the init's byte ("0", or "1" and a
    message when a startContainer hook failed), remove the fifo."""
    fifo = d + "/exec.fifo"
    try:
        fd = posix.open(fifo, _O_RDONLY | _O_NONBLOCK | _O_CLOEXEC)
    except OSError:
        raise _Fallback from None
    try:
        # A blocking read: the init, blocked in its open() for writing, already counts as
        # a writer, so the read returns its byte as soon as it is written, or EOF (b"") when
        # there is no writer (not yet at its open, or gone): then poll as pyoci.container.
        posix.set_blocking(fd, True)
        delay = 0.0002
        while True:
            alive = _init_alive(doc)              # before the read: a last byte is not lost
            try:
                data = posix.read(fd, 1)
            except BlockingIOError:
                data = None
            if data:
                break
            if not alive:
                from pyoci.errors import StateError

                raise _Reported(StateError("container init exited before it could be started"))
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        failure = b""
        if data != b"0":
            posix.set_blocking(fd, False)
            try:
                failure = posix.read(fd, 4096)
            except BlockingIOError:
                pass
    finally:
        posix.close(fd)
    posix.unlink(fifo)
    if data != b"0":
        from pyoci.errors import HookError

        raise _Reported(HookError(failure.decode(errors="replace")
                                  or "a startContainer hook failed"))


class _Reported(_Fallback):
    """An error found after something was done: reported here as pyoci.cli would."""


def _signal_number(s: str | None) -> int:
    """pyoci.container.parse_signal for numbers and plain names (no SIGRTMIN+N)."""
    import _signal

    if s is None or s == "":
        return _signal.SIGTERM
    if s.isdigit():
        n = int(s)
        if 0 < n < _signal.NSIG:
            return n
        raise _Fallback
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    n = getattr(_signal, name, None)
    if name.startswith(("SIG_", "SIGRT")) or type(n) is not int:
        raise _Fallback
    return n


def _kill(root: str, cid: str, sig: int) -> int:
    import _signal

    d, doc = _load(root, cid)
    if not _init_alive(doc):
        raise _Fallback
    try:
        pidfd = posix.pidfd_open(doc["pid"])
    except OSError:
        raise _Fallback from None
    try:
        if not _init_alive(doc):
            raise _Fallback
        _signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        raise _Fallback from None
    finally:
        posix.close(pidfd)
    return 0


def _delete(root: str, cid: str) -> int:
    d, doc = _load(root, cid)
    if _config_mentions(d, b'"poststop"'):
        raise _Fallback
    cg = doc.get("cgroup")
    if cg and not _plain_cgroup(cg) or doc.get("mounts"):
        raise _Fallback              # mounts to undo (no mount namespace): the full path
    fd = _lock(d)
    try:
        if _init_alive(doc):
            raise _Fallback          # not stopped: refused, or --force kills it first
        if cg:
            _destroy_cgroup(d, doc)
        _remove_state_dir(d)
    finally:
        posix.close(fd)
    return 0


def _plain_cgroup(cg: dict) -> bool:
    """A cgroupfs driver's state this path can remove (pyoci.cgroups v1/v2 destroy())."""
    created = cg.get("created")
    if not isinstance(created, list) or not all(isinstance(x, str) and x.startswith("/")
                                                for x in created):
        return False
    if cg.get("driver") == "v1":
        return isinstance(cg.get("paths"), dict)
    return cg.get("driver") == "v2" and isinstance(cg.get("path"), str)


def _destroy_cgroup(d: str, doc: dict) -> None:
    """rmdir what create made, deepest first; a busy or non-empty container cgroup (tasks
    draining, cgroups made inside) goes to pyoci.container.destroy_cgroup, which waits and
    recurses; an ancestor still in use stays, as the drivers do. A cgroup pyoci did not
    create is never in "created": it stays, and so do the processes in it."""
    cg = doc["cgroup"]
    leaves = set(cg["paths"].values()) if cg["driver"] == "v1" else {cg["path"]}
    if cg.get("unified"):
        leaves.add(cg["unified"])
    for path in sorted(cg["created"], key=lambda s: s.count("/"), reverse=True):
        try:
            posix.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if path in leaves or e.errno not in (16, 39):   # EBUSY, ENOTEMPTY
                _driver_destroy(d, doc)
                return


def _driver_destroy(d: str, doc: dict) -> None:
    """pyoci.container.destroy's cgroup step, with the full driver."""
    from pyoci import container, state

    _log()      # its warnings go where pyoci.cli would send them
    container.destroy_cgroup(state.State.from_json(doc, d))


def _remove_state_dir(d: str) -> None:
    """shutil.rmtree(d, ignore_errors=True) for the flat state directory."""
    try:
        for name in posix.listdir(d):
            posix.unlink(f"{d}/{name}")
        posix.rmdir(d)
    except OSError:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


# --- pause, resume ----------------------------------------------------------------------------
# pyoci.ops.pause/resume for a container whose cgroupfs freezer (the v1 freezer controller, or
# v2's cgroup.freeze) is in a plain state; the drivers' freeze/thaw (pyoci/cgroups/v1.py,
# v2.py) take over when the kernel does not answer at once. Keep in step with them.

def _pause(root: str, cid: str, on: bool) -> int:
    d, doc = _load(root, cid)
    kind, path = _freezer(doc.get("cgroup"))
    fd = _lock(d)
    try:
        # stopped, already paused (pause) or not paused (resume): the full path's errors
        if not _init_alive(doc) or _frozen(kind, path) == on:
            raise _Fallback
        if kind == "v1":
            want = "FROZEN" if on else "THAWED"
            _write_or_fallback(path + "/freezer.state", want)
            try:
                done = _read_opt(path + "/freezer.state") == want
            except OSError:
                done = False
        else:
            _write_or_fallback(path + "/cgroup.freeze", "1" if on else "0")
            try:
                done = not on or _frozen_events(path)   # the v2 driver's thaw does not wait
            except OSError:
                done = False
        if not done:        # still FREEZING...: the driver's loop, from its first write on
            _driver_freeze(doc["cgroup"], on)
    finally:
        posix.close(fd)
    return 0


def _freezer(cg) -> tuple[str, str]:
    """("v1", the freezer directory) or ("v2", the cgroup directory); else _Fallback (no
    cgroup, systemd, a hybrid container frozen through cgroup2 only...)."""
    if not isinstance(cg, dict):
        raise _Fallback
    if cg.get("driver") == "v1":
        path = (cg.get("paths") or {}).get("freezer") if isinstance(cg.get("paths"), dict) \
            else None
    elif cg.get("driver") == "v2":
        path = cg.get("path")
    else:
        raise _Fallback
    if not isinstance(path, str) or not path.startswith("/"):
        raise _Fallback
    created = cg.get("created")
    if not isinstance(created, list) or path not in created:
        raise _Fallback     # not a cgroup pyoci made: the full path refuses to freeze it
    return cg["driver"], path


def _frozen(kind: str, path: str) -> bool:
    """The driver's frozen() where its answer is plain: THAWED / self-FROZEN (v1), "0" / "1"
    with "frozen 1" (v2); anything else (FREEZING, a frozen parent, a file missing) is left to
    the full path."""
    try:
        if kind == "v1":
            state = _read_opt(path + "/freezer.state")
            if state == "THAWED":
                return False
            if state == "FROZEN" and _read_opt(path + "/freezer.self_freezing") == "1":
                return True
        else:
            freeze = _read_opt(path + "/cgroup.freeze")
            if freeze == "0":
                return False
            if freeze == "1" and _frozen_events(path):
                return True
    except OSError:
        pass
    raise _Fallback


def _frozen_events(path: str) -> bool:
    events = _read_opt(path + "/cgroup.events")
    return events is not None and "frozen 1" in events.splitlines()


def _write_or_fallback(path: str, value: str) -> None:
    """Write a cgroup file; a failed write changed nothing: the full path reports it."""
    try:
        fd = posix.open(path, _O_WRONLY | _O_CLOEXEC)
        try:
            posix.write(fd, value.encode())
        finally:
            posix.close(fd)
    except OSError:
        raise _Fallback from None


def _driver_freeze(cg: dict, on: bool) -> None:
    """The full driver's freeze()/thaw(), its errors reported as pyoci.cli would."""
    from pyoci import cgroups
    from pyoci.errors import PyociError

    try:
        mgr = cgroups.from_state(cg)
        if on:
            mgr.freeze()
        else:
            mgr.thaw()
    except PyociError as e:
        raise _Reported(e) from None


# --- exec -------------------------------------------------------------------------------------

_GLOBAL_VALUE_FLAG_NAMES = ("root", "log", "log-format", "criu", "rootless")   # pyoci.cli's


def _exec_warmup(argv: list[str]) -> None:
    """`exec` moves its joining process into the container's cgroups ~6 ms from here, and
    the first such move after a quiet spell waits for an RCU grace period (10-18 ms, see
    pyoci/warmup.py; runc waits as long): start that wait now, as create and run do, with a
    placeholder in a scratch cgroup of pyoci's own (never a write into a cgroup pyoci did
    not create, not even a no-op move of itself)."""
    if _command(argv) != "exec" or _warm:
        return
    from pyoci import warmup

    warmup.start()
    _warm.append(1)


def _command(argv: list[str]) -> str | None:
    """The command word after pyoci.cli's global flags (None if there is none)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if not a.startswith("-") or a == "-":
            return a
        name, eq, _ = a.lstrip("-").partition("=")
        i += 2 if name in _GLOBAL_VALUE_FLAG_NAMES and not eq else 1
    return None
