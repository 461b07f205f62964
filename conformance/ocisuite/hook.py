"""Hook program for conformance checks (runs on the host, stdlib only).

usage: hook.py OUTFILE NAME EXIT_CODE [PATH...]
Reads the container state from stdin and appends one JSON line to OUTFILE with the hook
NAME, the state, the container process' /proc view, and whether each PATH exists; then
exits with EXIT_CODE.
"""

import json
import os
import sys


def proc_view(pid) -> dict:
    out = {}
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            out["cmdline"] = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        out["exe"] = os.readlink(f"/proc/{int(pid)}/exe")
    except (OSError, TypeError, ValueError) as e:
        out["error"] = str(e)
    return out


def main() -> int:
    outfile, name, code, paths = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    raw = sys.stdin.read()
    try:
        state = json.loads(raw)
    except ValueError:
        state = {"unparsable": raw[:500]}
    rec = {"hook": name, "state": state, "argv": sys.argv, "ppid": os.getppid(),
           "env": {k: v for k, v in os.environ.items() if k.startswith("OCICT_")},
           "proc": proc_view(state.get("pid")) if isinstance(state, dict) else {},
           "paths": {p: os.path.exists(p) for p in paths}}
    with open(outfile, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
