"""OCI hooks: run each with the state JSON on stdin, its own args/env, and a timeout.

A hook without `env` inherits an environment as runc's do (Go's exec.Cmd with a nil Env):
the runtime's own for the hooks run on the host side (prestart, createRuntime, poststart,
poststop), the container process's for those run by the init (createContainer,
startContainer: runc's init has replaced its environment with process.env by then). An
empty `env` ([]) is an empty environment."""

from __future__ import annotations

import _signal
import os
import time

from pyoci import jsonio, log
from pyoci.errors import HookError

from pyoci import TYPE_CHECKING
if TYPE_CHECKING:
    from pyoci.spec.config import Hook, Hooks


HOOK_STATUS = {
    # The status each hook kind sees (runtime-spec v1.3.0 lifecycle): the first three run
    # during `create`, startContainer after `start` but before the user program executes,
    # poststart after it did, poststop after the container process is gone.
    "prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
    "startContainer": "created", "poststart": "running", "poststop": "stopped",
}


def run_hook(hook: Hook, state: dict, kind: str, index: int,
             inherit: dict[str, str] | None = None) -> None:
    """inherit: the environment of a hook without `env` (default: this process's)."""
    path = hook.path
    argv = hook.args or [path]
    env: dict[bytes, bytes] | dict[str, str]     # execve takes either
    if hook.env is None:
        if inherit is None:
            from pyoci.linux.sealed import startup_environ

            env = startup_environ()       # the runtime's own, as its caller gave it
        else:
            env = inherit
    else:
        env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    timeout = hook.timeout
    payload = jsonio.dumps(state).encode()
    r, w = os.pipe()
    er, ew = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        raise HookError(f"hooks.{kind}[{index}]: fork: {e.strerror}") from None
    if pid == 0:  # child
        try:
            os.dup2(r, 0)
            os.dup2(ew, 2)
            os.setsid()
            os.execve(path, argv, env)
        except BaseException as e:  # noqa: BLE001 - never back into the caller's code
            why = e.strerror if isinstance(e, OSError) else str(e)
            try:
                os.write(2, f"exec {path}: {why}".encode(errors="replace"))
            finally:
                os._exit(127)
        os._exit(127)
    os.close(r)
    os.close(ew)
    try:
        try:
            os.write(w, payload)
        except BrokenPipeError:
            pass
        os.close(w)
        deadline = None if timeout is None else time.monotonic() + timeout
        err = _wait_collect(pid, er, deadline)
    finally:
        os.close(er)
    if err is None:
        raise HookError(f"hooks.{kind}[{index}]: {path} timed out after {timeout}s")
    status, stderr = err
    if status != 0:
        why = (f"exit status {os.waitstatus_to_exitcode(status)}"
               if os.WIFEXITED(status) else f"killed by signal {os.WTERMSIG(status)}")
        detail = stderr.decode(errors="replace").strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        raise HookError(f"hooks.{kind}[{index}]: {path} failed: {why}{tail}")


def _wait_collect(pid: int, errfd: int, deadline: float | None):
    """Wait for the hook, collecting its stderr; None on timeout (the hook is killed)."""
    import select

    buf = b""
    open_ = True
    while True:
        if open_:
            rl, _, _ = select.select([errfd], [], [], 0.02)
            if rl:
                chunk = os.read(errfd, 65536)
                if chunk:
                    buf = (buf + chunk)[-4096:]
                else:
                    open_ = False
        else:
            time.sleep(0.002)
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return status, buf
        if deadline is not None and time.monotonic() >= deadline:
            try:
                os.killpg(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return None


def check(hooks: dict | None) -> None:
    """Create-time: every hook has a program to run (runc: "exec: no command" once the
    container is half made)."""
    for kind, items in (hooks or {}).items():
        for i, hook in enumerate(items if isinstance(items, list) else []):
            if isinstance(hook, dict) and not hook.get("path"):
                raise HookError(f"hooks.{kind}[{i}].path: must not be empty")


def run_hooks(hooks: Hooks, kind: str, state: dict, *, warn_only: bool = False,
              inherit: dict[str, str] | None = None) -> None:
    """Run the hooks of a kind (its config name: "createRuntime") in order; the first
    failure raises HookError (or only logs a warning when warn_only, as for
    poststart/poststop). inherit: see run_hook."""
    todo = hooks.of(kind)
    if not todo:
        return
    st = dict(state, status=HOOK_STATUS[kind])
    for i, hook in enumerate(todo):
        try:
            run_hook(hook, st, kind, i, inherit)
        except HookError as e:
            if not warn_only:
                raise
            log.warning("%s", e)
