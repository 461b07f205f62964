"""`pause ID` / `resume ID`: freeze and thaw the container's cgroup (runc pauses `created`
containers too). A cgroupfs freezer pyoci created, in a plain state, is read and written
here on built-in modules; the driver (pyoci.cgroups) does the rest: systemd, a freezer
still FREEZING after the write, a frozen parent, errors."""

from pyoci import cgstate, state
from pyoci.cgstate import manager


def pause(root: str, cid: str) -> None:
    _set(root, cid, True)


def resume(root: str, cid: str) -> None:
    _set(root, cid, False)


def _set(root: str, cid: str, on: bool) -> None:
    st = state.load(root, cid)
    with state.Lock(st.dir):
        plain = cgstate.freezer(st.cgroup) if st.creating is None else None
        frozen = cgstate.plain_frozen(*plain) if plain else None
        if plain is None or frozen is None:
            _with_driver(st, on)
            return
        # runc's status: a frozen `created` container counts as paused
        if on and (frozen or not state.init_alive(st)):
            from pyoci.errors import StateError

            raise StateError("container not running")
        if not on and not (frozen and state.init_alive(st)):
            from pyoci.errors import StateError

            raise StateError("container not paused")
        kind, path = plain
        try:
            if kind == "v1":
                want = "FROZEN" if on else "THAWED"
                cgstate.write(path + "/freezer.state", want)
                done = cgstate.read_opt(path + "/freezer.state") == want
            else:
                cgstate.write(path + "/cgroup.freeze", "1" if on else "0")
                done = not on or cgstate.events_say(path, "frozen 1")   # thaw does not wait
        except (OSError, UnicodeError):
            done = False
        if not done:        # still FREEZING, or a write refused: the driver, from its start
            mgr = manager(st, "pause" if on else "resume")
            if on:
                mgr.freeze()
            else:
                mgr.thaw()


def _with_driver(st: state.State, on: bool) -> None:
    cg = manager(st, "pause" if on else "resume")
    s = state.status(st)
    if s == "created" and cg.frozen():
        s = "paused"
    if on:
        if s not in ("running", "created"):
            from pyoci.errors import StateError

            raise StateError("container not running")
        cg.freeze()
    else:
        if s != "paused":
            from pyoci.errors import StateError

            raise StateError("container not paused")
        cg.thaw()


def run(command: str, root: str, cid: str) -> int:
    (pause if command == "pause" else resume)(root, cid)
    return 0
