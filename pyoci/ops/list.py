"""`list [--format table|json] [--quiet]`: every container under the state root, as runc's
table (ID PID STATUS BUNDLE CREATED OWNER), JSON array of states, or ids only."""

import sys

from pyoci import state
from pyoci.errors import PyociError, UsageError
from pyoci.ops.state import state_json


def list_states(root: str) -> list[dict]:
    out = []
    for cid in state.list_ids(root):
        try:
            out.append(state_json(root, cid))
        except PyociError:
            continue
    return out


def run(root: str, fmt: str = "table", quiet: bool = False) -> int:
    if fmt not in ("table", "json"):
        raise UsageError(f"list: invalid format {fmt!r} (table or json)")
    states = list_states(root)
    if quiet:
        for s in states:
            print(s["id"])
        return 0
    if fmt == "json":
        from pyoci import jsonio

        print(jsonio.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        sys.stdout.write("".join(c.ljust(w + 4) for c, w in zip(r[:-1], widths)) + r[-1]
                         + "\n")
    return 0
