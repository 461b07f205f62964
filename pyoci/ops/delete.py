"""`delete [--force] ID`: remove a stopped container (with --force any container: its
processes are killed first): the mounts create made in the runtime's mount namespace, its
cgroups, its state directory; then the poststop hooks (warnings only). Built-in modules
only for a stopped container whose cgroups pyoci created and are empty, without hooks."""

import _signal
import posix

from pyoci import cgstate, state


def delete(root: str, cid: str, force: bool = False) -> None:
    try:
        st = state.load(root, cid)
    except Exception as e:
        from pyoci.errors import ContainerNotFound

        if not isinstance(e, ContainerNotFound):
            raise
        if force:
            d = state.container_dir(root, cid)
            if state._isdir(d):          # a half-created leftover without state.json
                _unmount_leftover(d)
                state.rmtree(d)
            return
        raise
    with state.Lock(st.dir):
        if st.creating is not None:       # its create may have ended while we waited
            try:
                st = state.load(root, cid)
            except Exception as e:
                from pyoci.errors import ContainerNotFound

                if force and isinstance(e, ContainerNotFound):
                    return
                raise
        if not state.stopped(st):
            status = state.status(st)
            if not force:
                if status == "created":
                    from pyoci.errors import StateError

                    raise StateError("cannot delete a container in the created state without "
                                     "--force (runtime-spec: delete needs a stopped container)")
                from pyoci.errors import StateError

                raise StateError(f"cannot delete container that is not stopped: {status}")
            _kill_all_and_wait(st)
        destroy(st)


def _kill_all_and_wait(st: state.State) -> None:
    from pyoci.ops.kill import signal_init, signal_own, signal_recorded

    boot = (st.creating or {}).get("bootstrap")
    if boot:                              # a create killed before its init was forked
        signal_recorded(boot, _signal.SIGKILL)
    if st.cgroup:
        from pyoci import cgroups

        cg = cgroups.from_state(st.cgroup)
        if cg.owned():
            try:
                cg.kill_all(_signal.SIGKILL)
            except Exception:  # noqa: BLE001 - the init is killed below in any case
                pass
            try:
                cg.thaw()
            except Exception:  # noqa: BLE001
                pass
        else:
            signal_own(st, _signal.SIGKILL)
    if st.pid > 0:
        try:
            signal_init(st, _signal.SIGKILL)
        except Exception as e:
            from pyoci.errors import PyociError

            if not isinstance(e, PyociError):
                raise
        if not state.wait_dead(st.pid, st.start_time, timeout=10):
            from pyoci.errors import SysError

            raise SysError(f"container init {st.pid} did not die after SIGKILL")
    if boot and not state.wait_dead(boot[0], boot[1], timeout=10):
        from pyoci.errors import SysError

        raise SysError(f"container bootstrap {boot[0]} did not die after SIGKILL")


def destroy(st: state.State) -> None:
    """Unmount what create mounted in the runtime's mount namespace (a container without a
    mount namespace of its own), remove the container's cgroup and state; then the
    poststop hooks (warnings only)."""
    if st.creating is not None:           # a create killed midway: its mounts so far
        _unmount_leftover(st.dir)
    if st.mounts:
        from pyoci import log
        from pyoci.linux import mountinfo

        for path in mountinfo.unmount_recorded(st.mounts):
            log.warning("%s: not unmounted (no longer the mount create made there)", path)
    if st.cgroup:
        destroy_cgroup(st)
    try:
        hooks = state.config_hooks(st, b"poststop")
    except ValueError:                    # a corrupt config: no hooks to run
        hooks = None
    if hooks and (st.creating is None or st.creating.get("hooks")):
        from pyoci.linux.hooks import run_hooks
        from pyoci.spec import config

        run_hooks(config.Hooks.parse(hooks), "poststop", state.public_state(st, "stopped"),
                  warn_only=True)
    state.rmtree(st.dir)


def destroy_cgroup(st: state.State) -> None:
    """Kill what is left in the container's cgroups (when they are its own: processes of a
    container without a PID namespace of its own may outlive its init) and remove them;
    a cgroup pyoci did not create is left as it is, and with it every process in it.
    The common case (cgroupfs directories pyoci made, empty) is rmdir here, deepest first;
    the driver does the rest."""
    cg = st.cgroup
    if not cg or cgstate.plain_dirs(cg) and _rmdir_created(cg):
        return
    from pyoci import cgroups

    try:
        mgr = cgroups.from_state(cg)
        if mgr.owned():
            if mgr.pids():
                mgr.kill_all(_signal.SIGKILL)
        else:
            from pyoci.ops.kill import signal_own

            signal_own(st, _signal.SIGKILL)
        mgr.destroy()
    except Exception as e:  # noqa: BLE001 - reported, deletion goes on
        from pyoci import log

        log.warning("cgroup cleanup: %s", e)


def _rmdir_created(cg: dict) -> bool:
    """rmdir what create made, deepest first; an ancestor still in use (EBUSY, ENOTEMPTY)
    stays, as with the drivers. False (the driver takes over) when a container cgroup
    cannot be removed (tasks draining, cgroups made inside it) or anything else fails."""
    leaves = set(cgstate.leaves(cg))
    for path in sorted(cg["created"], key=lambda s: s.count("/"), reverse=True):
        try:
            posix.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if path in leaves or e.errno not in (16, 39):   # EBUSY, ENOTEMPTY
                return False
    return True


def _unmount_leftover(d: str) -> None:
    """A create without a mount namespace that died midway (no state.json): unmount what
    appeared under its rootfs since it started (as a failed create does)."""
    from pyoci import jsonio

    try:
        doc = jsonio.loads(state.read_file(f"{d}/{state.MOUNTS_BEFORE}"))
        rootfs, before = doc["rootfs"], {int(i): "" for i in doc["before"]}
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(rootfs, str) or not rootfs.startswith("/"):
        return
    from pyoci.linux import mountinfo

    mountinfo.unmount_recorded(mountinfo.new_mounts(rootfs, before))


def run(root: str, cid: str, force: bool) -> int:
    delete(root, cid, force)
    return 0
