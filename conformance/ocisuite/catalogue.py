"""Read the runtime-spec requirement catalogue from runtime-tools' specerror Go sources."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass

PACKAGE = "golang-github-opencontainers-runtime-tools-dev"
DEFAULT_DIR = "/usr/share/gocode/src/github.com/opencontainers/runtime-tools/specerror"
SPEC_VERSION = "v1.3.0"
REF_URL = "https://github.com/opencontainers/runtime-spec/blob/" + SPEC_VERSION + "/{}"

_COMMENT = re.compile(r'^\s*//\s*(\w+)\s+represents\s+(["`])(.*?)"?\s*$')
_CONST = re.compile(r"^\s*(\w+)(?:\s+Code\s*=\s*(0x[0-9a-fA-F]+)\s*\+\s*iota)?\s*$")
_REF = re.compile(r'^\s*(\w+)\s*=\s*func\(.*?referenceTemplate,\s*version,\s*"([^"]+)"', re.S)
_REGISTER = re.compile(r"register\(\s*(\w+)\s*,\s*rfc2119\.(\w+)\s*,\s*(\w+)\s*\)")


@dataclass(frozen=True)
class Requirement:
    code: str          # Go constant name, e.g. "StartNotCreatedGenError"
    number: int        # numeric Code value (0xe01f ...)
    level: str         # MUST, SHOULD, MAY, REQUIRED, ... (upper case, from rfc2119.Level)
    text: str          # the spec sentence quoted in the Go comment
    source: str        # Go file the constant lives in, e.g. "runtime.go"
    reference: str     # spec document and anchor, e.g. "runtime.md#start"

    @property
    def url(self) -> str:
        return REF_URL.format(self.reference)

    @property
    def platform(self) -> str:
        return "windows" if "windows" in self.source else "linux"


def find_specerror_dir() -> str:
    """Locate the specerror directory via dpkg -L, falling back to the usual path."""
    try:
        out = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        if line.rstrip("/").endswith("/specerror") and os.path.isdir(line):
            return line
    return DEFAULT_DIR


def _parse_refs(text: str) -> dict[str, str]:
    refs = {}
    for chunk in re.split(r"\n\s*(?=\w+\s*=\s*func\()", text):
        m = _REF.match(chunk.strip())
        if m:
            refs[m.group(1)] = m.group(2)
    return refs


def parse_go_file(path: str) -> list[Requirement]:
    """Parse one specerror/*.go file: const block comments, iota numbering, register calls."""
    with open(path) as f:
        text = f.read()
    consts: list[tuple[str, int, str]] = []
    m = re.search(r"\nconst \((.*?)\n\)", text, re.S)
    if m:
        comment = ""
        base = None
        idx = 0
        for line in m.group(1).splitlines():
            cm = _COMMENT.match(line)
            if cm:
                # one upstream comment opens its quote with the sentence's own backtick
                comment = (cm.group(2) if cm.group(2) == "`" else "") + cm.group(3)
                continue
            km = _CONST.match(line)
            if not km or line.strip().startswith("//"):
                continue
            if km.group(2):
                base = int(km.group(2), 16)
                idx = 0
            if base is None:
                continue
            consts.append((km.group(1), base + idx, comment))
            idx += 1
            comment = ""
    refs = _parse_refs(text)
    registered = {name: (level, ref) for name, level, ref in _REGISTER.findall(text)}
    out = []
    for name, number, comment in consts:
        if name not in registered:
            continue  # NonError/NonRFCError in error.go are not spec requirements
        level, ref = registered[name]
        out.append(Requirement(code=name, number=number, level=level.upper(), text=comment,
                               source=os.path.basename(path), reference=refs.get(ref, "")))
    return out


def load_catalogue(directory: str | None = None) -> list[Requirement]:
    """Every registered requirement, ordered by code number."""
    directory = directory or find_specerror_dir()
    files = sorted(glob.glob(os.path.join(directory, "*.go")))
    if not files:
        raise FileNotFoundError(f"no specerror Go files in {directory} (install {PACKAGE})")
    reqs = [r for f in files if not f.endswith("_test.go") for r in parse_go_file(f)]
    return sorted(reqs, key=lambda r: r.number)
