#!/usr/bin/env python3
"""Add a `<codename>-backports` APT source next to the machine's existing Debian source.

Used by scripts/setup.sh for the packages of scripts/apt-backports.txt (Go 1.23 for the
upstream runtime-tools suite: bookworm's own Go is 1.19). Nothing about the mirror is written
in the repository: the URI, components and keyring are read from the source that already
serves `<codename>` (deb822 `*.sources` or one-line `sources.list` form) and the new source
is written in the same form. Prints the path written, or nothing when a backports source
already exists. Stdlib only; run as root.
"""

import glob
import os
import re
import sys

APT = "/etc/apt"
NAME = "pyoci-backports"


def codename(osrel: str = "/etc/os-release") -> str:
    with open(osrel) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k == "VERSION_CODENAME" and v:
                return v.strip('"')
    raise SystemExit("backports: no VERSION_CODENAME in " + osrel)


def deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file: {field (lower case): value}; comments dropped."""
    out, cur, key = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip().lower()
            cur[key] = v.strip()
    if cur:
        out.append(cur)
    return out


def oneline_entries(text: str) -> list[tuple[str, str, str, list[str]]]:
    """`deb [opts] uri suite comp...` lines: (options, uri, suite, components)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if m:
            out.append(((m.group(1) or "").strip(), m.group(2), m.group(3), m.group(4).split()))
    return out


def plan(apt: str, code: str) -> tuple[str, str] | None:
    """(path, content) of the source to write, or None when one for <code>-backports exists."""
    want = code + "-backports"
    deb822, oneline = [], []
    for path in sorted(glob.glob(os.path.join(apt, "sources.list.d", "*.sources"))):
        with open(path) as f:
            deb822 += deb822_stanzas(f.read())
    lists = [os.path.join(apt, "sources.list")] + sorted(
        glob.glob(os.path.join(apt, "sources.list.d", "*.list")))
    for path in lists:
        if os.path.isfile(path):
            with open(path) as f:
                oneline += oneline_entries(f.read())
    for st in deb822:
        if st.get("enabled", "yes").lower() != "no" and want in st.get("suites", "").split():
            return None
    if any(suite == want for _, _, suite, _ in oneline):
        return None
    for st in deb822:
        if (st.get("enabled", "yes").lower() != "no" and "deb" in st.get("types", "").split()
                and code in st.get("suites", "").split()):
            lines = ["Types: deb", "URIs: " + st["uris"], "Suites: " + want,
                     "Components: " + st.get("components", "main")]
            for k in ("signed-by", "architectures", "trusted"):
                if k in st:
                    name = {"signed-by": "Signed-By"}.get(k, k.capitalize())
                    lines.append(f"{name}: {st[k]}")
            return os.path.join(apt, "sources.list.d", NAME + ".sources"), "\n".join(lines) + "\n"
    for opts, uri, suite, comps in oneline:
        if suite == code:
            line = " ".join(x for x in ("deb", opts, uri, want, " ".join(comps) or "main") if x)
            return os.path.join(apt, "sources.list.d", NAME + ".list"), line + "\n"
    raise SystemExit(f"backports: no APT source for '{code}' under {apt} to derive "
                     f"'{want}' from")


def main(argv: list[str]) -> int:
    apt = argv[1] if len(argv) > 1 else APT
    got = plan(apt, codename())
    if got is None:
        return 0
    path, text = got
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
