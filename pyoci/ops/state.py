"""`state ID`: the container's state document (runtime-spec State plus runc's fields), as
JSON indented by two spaces. Built-in modules only (pyoci.state)."""

import sys

from pyoci import jsonio, state


def state_json(root: str, cid: str) -> dict:
    st = state.load(root, cid)
    return state.public_state(st, state.status(st))


def run(root: str, cid: str) -> int:
    sys.stdout.write(jsonio.dumps(state_json(root, cid), indent=2) + "\n")
    return 0
