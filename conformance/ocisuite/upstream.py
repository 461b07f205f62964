"""The upstream OCI validation suite (opencontainers/runtime-tools `validation/*.t`) against
pyoci and runc: build (cached), run in a private mount namespace with private --root
directories and cgroups, TAP parsing, known failures, the CI gate and the Markdown report.

Stdlib only. The suite's source is not part of the project: it is read from
`../shared/upstream/runtime-tools-5e63903` next to the repository (or --source), copied to a
scratch directory and built there with Go >= 1.21.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from . import harness

HERE = os.path.dirname(os.path.abspath(__file__))
CONFORMANCE = os.path.dirname(HERE)
REPO = os.path.dirname(CONFORMANCE)
SOURCE_NAME = "runtime-tools-5e63903"
DEFAULT_SOURCE = os.path.join(REPO, "..", "shared", "upstream", SOURCE_NAME)
BUILD_ROOT = os.path.join(CONFORMANCE, "build", "runtime-tools")
KNOWN_FILE = os.path.join(CONFORMANCE, "runtime-tools-known.txt")
REPORT_FILE = os.path.join(CONFORMANCE, "REPORT-runtime-tools.md")
PROGRAM_TIMEOUT = 180.0
GO_MIN = (1, 21)
# The cgroups the suite's configs name (runtime-tools cgroups.AbsCgroupPath/RelCgroupPath):
# "/cgrouptest" from each hierarchy's root, "testdir/cgrouptest/container" from the runtime's.
ABS_CGROUP = "cgrouptest"
# Container ids of the suite: uuid.NewString(); runc and pyoci name a default cgroup after it.
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PROGRAM_LINE = "(program)"


# --- TAP -------------------------------------------------------------------------------------

@dataclass
class TapLine:
    number: int
    ok: bool
    description: str
    directive: str = ""          # "SKIP reason" / "TODO reason"
    diag: dict | str | None = None
    comments: list = field(default_factory=list)   # `# ...` lines after the line

    @property
    def skipped(self) -> bool:
        return self.directive.upper().startswith("SKIP")

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.ok else "failed")

    def cause(self) -> str:
        """One line: the YAML's error (first line), else the `#` comments after the line."""
        return one_line(diag_error(self.diag)) or one_line("; ".join(self.comments))


@dataclass
class Tap:
    """One program's output: one or more TAP documents (a program may print a `TAP version`
    header per test function), their lines concatenated."""
    lines: list[TapLine] = field(default_factory=list)
    plan: int | None = None       # the sum of the documents' plans; None if one has none
    plan_skip: str = ""           # `1..0 # SKIP reason`
    orphan_diags: list = field(default_factory=list)   # YAML not after a test line
    bail: str = ""
    docs: list = field(default_factory=list)   # [(plan or None, number of lines)]
    seen_tap: bool = False        # any TAP at all (a header, plan or line)

    def plan_error(self) -> str:
        for plan, n in self.docs:
            if plan is None and n:
                return "no TAP plan"
            if plan is not None and plan != n:
                return f"planned {plan} tests, ran {n}"
        return ""

    def counts(self) -> tuple[int, int, int]:
        p = sum(1 for ln in self.lines if ln.status == "passed")
        f = sum(1 for ln in self.lines if ln.status == "failed")
        s = sum(1 for ln in self.lines if ln.status == "skipped")
        return p, f, s


LINE = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?(.*?)\s*$")
PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#\s*(.*))?$")


def parse_tap(text: str) -> Tap:
    """Parse TAP 13 as tap-go prints it: `ok N - desc`, `not ok`, `# SKIP`, indented YAML
    blocks (`---` ... `...`, JSON in practice) after a line, or before any line (then it is an
    error the test printed instead of a result: with `1..0` and exit status 0)."""
    tap = Tap()
    rows = text.splitlines()
    doc = None           # [plan, lines] of the current document
    i = 0
    while i < len(rows):
        row = rows[i]
        stripped = row.strip()
        if stripped.startswith("TAP version"):
            tap.seen_tap = True
            doc = [None, 0]
            tap.docs.append(doc)
            i += 1
            continue
        if doc is None and (LINE.match(row) or PLAN.match(stripped)):
            doc = [None, 0]
            tap.docs.append(doc)
        if stripped == "---" and row.startswith(" "):
            indent = row[:len(row) - len(row.lstrip())]
            body = []
            i += 1
            while i < len(rows) and rows[i].strip() != "...":
                r = rows[i]
                body.append(r[len(indent):] if r.startswith(indent) else r.strip())
                i += 1
            diag = parse_yaml_block("\n".join(body))
            if doc and doc[1] and doc[0] is None and tap.lines[-1].diag is None:
                tap.lines[-1].diag = diag
            else:
                tap.orphan_diags.append(diag)
            i += 1
            continue
        m = LINE.match(row)
        if m:
            desc, directive = m.group(3), ""
            if " # " in f" {desc}" or desc.startswith("#"):
                d, _, directive = f" {desc}".partition(" # ")
                if desc.startswith("#"):
                    d, directive = "", desc[1:]
                desc = d.strip()
                directive = directive.strip()
            num = int(m.group(2)) if m.group(2) else len(tap.lines) + 1
            tap.lines.append(TapLine(num, m.group(1) == "ok", desc, directive))
            tap.seen_tap = True
            doc[1] += 1
        else:
            m = PLAN.match(stripped)
            if m and not row.startswith(" "):
                tap.seen_tap = True
                doc[0] = int(m.group(1))
                tap.plan = (tap.plan or 0) + int(m.group(1))
                tap.plan_skip = tap.plan_skip or (m.group(2) or "").strip()
            elif stripped.startswith("Bail out!"):
                tap.bail = stripped[len("Bail out!"):].strip() or "bail out"
            elif stripped.startswith("#") and tap.lines and not row.startswith(" "):
                tap.lines[-1].comments.append(stripped[1:].strip())
        i += 1
    return tap


def parse_yaml_block(body: str):
    """tap-go writes its YAML diagnostics as JSON; anything else is kept as text."""
    try:
        return json.loads(body)
    except ValueError:
        out = {}
        for ln in body.splitlines():
            k, sep, v = ln.partition(":")
            if sep and k and not k.startswith(" "):
                out[k.strip()] = v.strip().strip('"')
        return out or body


def diag_error(diag) -> str:
    """The error a YAML diagnostic carries: `error` (with the runtime's `stderr` when the
    error is only an exit status), else `expected`/`actual`, else `stderr`/`message`."""
    if isinstance(diag, dict):
        err = diag.get("error")
        err = err.strip() if isinstance(err, str) else ""
        stderr = one_line(diag.get("stderr") or "") if isinstance(diag.get("stderr"), str) else ""
        if err and stderr and re.fullmatch(r"exit status \d+", err):
            return f"{err}: {stderr}"
        if err:
            return err
        if "actual" in diag and "expected" in diag and (diag["actual"] or diag["expected"]):
            return f"expected {diag['expected']}, got {diag['actual']}"
        for k in ("stderr", "message"):
            v = diag.get(k)
            if isinstance(v, str) and v.strip():
                return v
        return ""
    return diag or ""


WEAK = re.compile(r"^(|exit status \d+|expected .*, got .*exit status \d+.*)$")


def one_line(text: str, limit: int = 240) -> str:
    """The first meaningful line, without `Refer to:` links and Go's multi-error framing."""
    for ln in str(text).splitlines():
        ln = ln.strip().lstrip("*").strip()
        if not ln or ln.startswith("Refer to:") or re.fullmatch(r"\d+ errors? occurred:", ln):
            continue
        m = re.match(r'time="[^"]*" level=\w+ msg=("(?:[^"\\]|\\.)*"|\S+)', ln)
        if m:           # logrus (runc --log-format text): the message itself
            ln = m.group(1)
            if ln.startswith('"'):
                try:
                    ln = json.loads(ln)
                except ValueError:
                    ln = ln.strip('"')
        return ln if len(ln) <= limit else ln[:limit - 3] + "..."
    return ""


# --- one program's outcome -------------------------------------------------------------------

@dataclass
class ProgramResult:
    program: str
    runtime: str
    rc: int
    seconds: float
    stdout: str
    stderr: str
    timed_out: bool = False
    left_mounts: int = 0
    left_cgroups: int = 0
    left_containers: int = 0

    def __post_init__(self):
        self.tap = parse_tap(self.stdout)

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.tap.counts()

    def warnings(self) -> list[str]:
        """`WARNING: ...` lines the program printed (poststop: the hook was not invoked)."""
        return sorted({ln.strip() for ln in self.stderr.splitlines()
                       if ln.strip().startswith("WARNING")})

    def stderr_cause(self) -> str:
        """The runtime's error the program printed on stderr (the last distinct one)."""
        lines = [one_line(ln) for ln in self.stderr.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("exit status")
                 and ln != "failed to create the container"]
        return lines[-1] if lines else ""

    def program_error(self) -> str:
        """Why the program as a whole failed ("" when it did not): a timeout, a non-zero
        exit, an error printed as YAML only (`1..0`, exit 0), a missing or short plan."""
        tap = self.tap
        if self.timed_out:
            return f"timed out after {self.seconds:.0f}s"
        if tap.bail:
            return f"bail out: {tap.bail}"
        errs = [one_line(diag_error(d)) for d in tap.orphan_diags]
        errs = [e for e in errs if e]
        if errs:
            return errs[0]
        if self.rc != 0:
            useful = [t for t in (one_line(ln) for ln in self.stderr.splitlines())
                      if t and not t.startswith("exit status")]
            distinct = list(dict.fromkeys(useful))
            msg = " / ".join(distinct[:3]) if distinct else "the program printed no cause"
            return f"exit status {self.rc}: {msg}"
        if not tap.seen_tap:
            return ""        # a program that reports through its exit status only (*_fail)
        return tap.plan_error()

    @property
    def status(self) -> str:
        p, f, s = self.counts
        if self.program_error() or f:
            return "failed"
        if (s and not p) or (self.tap.plan_skip and not self.tap.lines):
            return "skipped"
        return "passed"

    def failures(self) -> list[tuple[str, int, str, str]]:
        """(description, occurrence, TAP number, cause) of every failed line, and the program
        itself (PROGRAM_LINE) when it failed as a whole."""
        out, seen = [], {}
        for ln in self.tap.lines:
            occ = seen[ln.description] = seen.get(ln.description, 0) + 1
            if ln.status == "failed":
                cause = ln.cause()
                if WEAK.match(cause) or cause.startswith("expect: err == nil"):
                    hint = self.stderr_cause()
                    cause = f"{cause}: {hint}" if cause and hint else (cause or hint)
                out.append((ln.description, occ, ln.number, cause))
        err = self.program_error()
        if err:
            out.append((PROGRAM_LINE, 1, 0, err))
        return out

    def passed_keys(self) -> set[tuple[str, int]]:
        out, seen = set(), {}
        for ln in self.tap.lines:
            occ = seen[ln.description] = seen.get(ln.description, 0) + 1
            if ln.status == "passed":
                out.add((ln.description, occ))
        if self.status == "passed":
            out.add((PROGRAM_LINE, 1))
        return out

    def to_json(self) -> dict:
        p, f, s = self.counts
        return {"program": self.program, "runtime": self.runtime, "rc": self.rc,
                "seconds": round(self.seconds, 2), "timed_out": self.timed_out,
                "passed": p, "failed": f, "skipped": s, "status": self.status,
                "program_error": self.program_error(), "stdout": self.stdout,
                "stderr": self.stderr[-4000:], "left_mounts": self.left_mounts,
                "left_cgroups": self.left_cgroups, "left_containers": self.left_containers}

    @classmethod
    def from_json(cls, d: dict) -> ProgramResult:
        return cls(d["program"], d["runtime"], d["rc"], d["seconds"], d["stdout"], d["stderr"],
                   d.get("timed_out", False), d.get("left_mounts", 0), d.get("left_cgroups", 0),
                   d.get("left_containers", 0))


# --- known failures --------------------------------------------------------------------------

CLASSES = {
    "host": "this host",
    "suite": "suite bug",
    "pyoci": "pyoci's",
    "runc": "runc's",
    "crun": "crun's",
    "lane": "the lane's guest",
}


@dataclass
class Known:
    program: str        # a program name or "*"
    runtimes: set       # {"pyoci", "runc", ...} or {"*"}
    description: str    # a TAP description, "*" (any line) or "(program)"
    klass: str          # a key of CLASSES
    reason: str
    lineno: int = 0
    used: int = 0

    def matches(self, program: str, runtime: str, description: str, cause: str = "") -> bool:
        if self.program not in ("*", program):
            return False
        if "*" not in self.runtimes and runtime not in self.runtimes:
            return False
        if self.description.startswith("cause: "):
            return re.search(self.description[len("cause: "):], cause) is not None
        return self.description in ("*", description)


def load_known(path: str = KNOWN_FILE) -> list[Known]:
    """`program | runtimes | test | class | reason` per line, `#` comments. program: a name
    or `*`; runtimes: comma-separated or `*`; test: a TAP description, `*` (any), `(program)`
    (the program as a whole) or `cause: REGEX` (any test whose cause matches). Every entry
    needs a known class and a reason; the first matching entry wins."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [p.strip() for p in line.split(" | ")]
            if len(parts) != 5:
                raise ValueError(f"{path}:{n}: expected 5 fields separated by ' | ', "
                                 f"got {len(parts)}")
            program, runtimes, desc, klass, reason = parts
            if klass not in CLASSES:
                raise ValueError(f"{path}:{n}: unknown class {klass!r} "
                                 f"(one of {', '.join(CLASSES)})")
            if not reason or not program or not desc:
                raise ValueError(f"{path}:{n}: program, description and reason are required")
            out.append(Known(program, {r.strip() for r in runtimes.split(",")}, desc, klass,
                             reason, n))
    return out


def classify(known: list[Known], program: str, runtime: str, description: str,
             cause: str = "") -> Known | None:
    for k in known:
        if k.matches(program, runtime, description, cause):
            return k
    return None


@dataclass
class Regression:
    program: str
    description: str
    number: int
    cause: str
    known: Known | None


def gate(pyoci: dict[str, ProgramResult], runc: dict[str, ProgramResult],
         known: list[Known], runtime: str = "pyoci") -> list[Regression]:
    """Every test (TAP line, by description and occurrence, or the program as a whole) that
    `runtime` fails and runc passes in the same run; `known` set when listed with a reason."""
    out = []
    for prog, res in sorted(pyoci.items()):
        ref = runc.get(prog)
        if ref is None:
            continue
        ref_passed = ref.passed_keys()
        for desc, occ, num, cause in res.failures():
            if (desc, occ) in ref_passed:
                out.append(Regression(prog, desc, num, cause,
                                      classify(known, prog, runtime, desc, cause)))
        if res.status != "passed" and ref.status == "passed":
            # lines pyoci never printed (it stopped early) count through (program)
            if not any(r.program == prog and r.description == PROGRAM_LINE for r in out):
                missing = {k for k in ref_passed - res.passed_keys() if k[0] != PROGRAM_LINE}
                missing -= {(d, o) for d, o, _, _ in res.failures()}
                if missing:
                    hint = res.stderr_cause()
                    cause = f"{len(missing)} test(s) runc passes not run" + (
                        f"; stderr: {hint}" if hint else "")
                    out.append(Regression(prog, PROGRAM_LINE, 0, cause,
                                          classify(known, prog, runtime, PROGRAM_LINE, cause)))
    return out


# --- build -----------------------------------------------------------------------------------

def find_go() -> str | None:
    """A `go` of version >= 1.21: /usr/lib/go-1.2x (Debian's versioned packages) or PATH."""
    cands = sorted(glob.glob("/usr/lib/go-1.*/bin/go"), key=_go_dir_version, reverse=True)
    if shutil.which("go"):
        cands.append(shutil.which("go"))
    for c in cands:
        v = go_version(c)
        if v and v >= GO_MIN:
            return c
    return None


def _go_dir_version(path: str) -> tuple:
    m = re.search(r"go-(\d+)\.(\d+)", path)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def go_version(go: str) -> tuple | None:
    try:
        r = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"go(\d+)\.(\d+)", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def source_key(src: str, go: str) -> str:
    """sha256 of every file's path, mode and content, and the Go version: the cache key."""
    h = hashlib.sha256()
    h.update(subprocess.run([go, "version"], capture_output=True, text=True).stdout.encode())
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, src)
            st = os.lstat(p)
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            else:
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def programs_in(tree: str) -> list[str]:
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(tree, "validation", "*", "*.go"))
                  if os.path.basename(p) == os.path.basename(os.path.dirname(p)) + ".go")


def build(src: str, log=print, force: bool = False) -> str:
    """The built tree for `src` (copy + `make runtimetest validation-executables`), cached in
    conformance/build/runtime-tools/<key>; returns its path."""
    go = find_go()
    if not go:
        raise RuntimeError("no Go >= 1.21 (bookworm: golang-1.23-go from bookworm-backports; "
                           "scripts/setup.sh installs it)")
    key = source_key(src, go)
    out = os.path.join(BUILD_ROOT, key)
    if not force and os.path.exists(os.path.join(out, ".built")):
        return out
    os.makedirs(BUILD_ROOT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=BUILD_ROOT)
    tree = os.path.join(tmp, "src")
    t0 = time.monotonic()
    shutil.copytree(src, tree, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(tree):   # the source may be read-only
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    env = dict(os.environ, PATH=os.path.dirname(go) + os.pathsep + os.environ.get("PATH", ""),
               GOFLAGS="-mod=vendor", GOTOOLCHAIN="local",
               GOCACHE=os.path.join(BUILD_ROOT, "gocache"), GOPATH=os.path.join(tmp, "gopath"),
               CGO_ENABLED=os.environ.get("CGO_ENABLED", "1"))
    r = subprocess.run(["make", "runtimetest", "validation-executables"], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("building runtime-tools failed:\n" + (r.stdout + r.stderr)[-3000:])
    with open(os.path.join(tree, ".built"), "w") as f:
        v = go_version(go)
        f.write(f"go{v[0]}.{v[1]} {time.monotonic() - t0:.1f}s\n")
    shutil.rmtree(os.path.join(tmp, "gopath"), ignore_errors=True)
    try:
        os.rename(tree, out)
    except OSError:            # built meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    shutil.rmtree(tmp, ignore_errors=True)
    for old in glob.glob(os.path.join(BUILD_ROOT, "*")):
        if os.path.basename(old) not in (key, "gocache") and not old.startswith("."):
            if re.fullmatch(r"[0-9a-f]{16}", os.path.basename(old)):
                shutil.rmtree(old, ignore_errors=True)
    log(f"# built runtime-tools ({key}) in {time.monotonic() - t0:.0f}s with {go}")
    return out


# --- isolation: a private mount namespace, own cgroups ---------------------------------------

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MNT_DETACH = 0x4000, 1 << 18, 2
_libc = ctypes.CDLL(None, use_errno=True)


def private_mount_namespace() -> None:
    """Enter a mount namespace of our own (private propagation): mounts the suite's
    containers leave behind (runc does without a mount namespace) never reach the host's,
    and die with it at the latest."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "unshare(CLONE_NEWNS): " + os.strerror(e))
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount --make-rprivate /: " + os.strerror(e))


def mounts_under(path: str) -> list[str]:
    path = os.path.realpath(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = harness.unescape(line.split()[4])
            if (mp + "/").startswith(path):
                out.append(mp)
    return out


def unmount_under(path: str) -> int:
    """Detach every mount at or below `path` (deepest first); returns how many there were."""
    mps = mounts_under(path)
    for mp in sorted(set(mps), key=lambda p: (-p.count("/"), p)):
        for _ in range(mps.count(mp)):
            if _libc.umount2(mp.encode(), MNT_DETACH) != 0:
                break
    return len(mps)


class Cgroups:
    """A cgroup of our own in every hierarchy (a child of the one we are in), so the suite's
    relative and default container cgroups nest under it; cleanup() removes what appeared
    under it and the suite's absolute `/cgrouptest` where it did not exist before."""

    def __init__(self, name: str):
        self.dirs = []
        self.parents = []
        own = harness.own_cgroups()
        for ctrl, (mnt, root) in sorted(harness.cgroup_mounts().items()):
            path = own.get(ctrl)
            if path is None or not os.path.isdir(mnt):
                continue
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            parent = os.path.normpath(os.path.join(mnt, rel))
            d = os.path.join(parent, name)
            if d in self.dirs:
                continue
            try:
                os.makedirs(d, exist_ok=True)
                for fn in ("cpuset.cpus", "cpuset.mems"):
                    if os.path.exists(os.path.join(d, fn)):
                        with open(os.path.join(parent, fn)) as src, \
                                open(os.path.join(d, fn), "w") as dst:
                            dst.write(src.read())
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
                continue
            self.dirs.append(d)
            self.parents.append(parent)
        self.abs_dirs = sorted({os.path.join(mnt, ABS_CGROUP)
                                for mnt, _ in harness.cgroup_mounts().values()})

    def snapshot(self) -> set[str]:
        return {d for d in self.abs_dirs if os.path.isdir(d)}

    def cleanup(self, before: set[str]) -> tuple[int, list[int]]:
        """rmdir what the suite's containers left (bottom-up); returns (count, pids still in
        them). Only our own cgroup's subtree and a /cgrouptest that appeared meanwhile."""
        roots = list(self.dirs) + [d for d in self.snapshot() if d not in before]
        count, pids = 0, []
        for root in roots:
            subs = [dp for dp, _, _ in os.walk(root)]
            if root in self.dirs:
                subs = [s for s in subs if s != root]
            for sub in sorted(subs, key=lambda p: -p.count("/")):
                count += 1
                try:
                    with open(os.path.join(sub, "cgroup.procs")) as f:
                        pids += [int(x) for x in f.read().split()]
                except OSError:
                    pass
        return count, sorted(set(pids))

    def remove(self, before: set[str]) -> None:
        roots = list(self.dirs) + [d for d in self.snapshot() if d not in before]
        for root in roots:
            for sub in sorted((dp for dp, _, _ in os.walk(root)), key=lambda p: -p.count("/")):
                if sub in self.dirs:
                    continue
                try:
                    os.rmdir(sub)
                except OSError:
                    pass

    def leave(self) -> None:
        for _d, parent in zip(self.dirs, self.parents):
            try:
                with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        for d in self.dirs:
            for sub in sorted((dp for dp, _, _ in os.walk(d)), key=lambda p: -p.count("/")):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass


# --- running ---------------------------------------------------------------------------------

def wrapper(scratch: str, name: str, binary: str, root: str, oci_version: str = "") -> str:
    """RUNTIME for the suite: the binary with a private --root (the suite passes none). With
    oci_version, `create` first relabels the bundle's config.json with that ociVersion (crun
    1.8.1 refuses anything but 1.0.x, and the suite writes 1.3.0): harness.OCI_VERSIONS."""
    path = os.path.join(scratch, f"{name}-runtime")
    relabel = ""
    if oci_version:
        if not re.fullmatch(r"[0-9A-Za-z.+~-]+", oci_version):
            raise ValueError(f"bad ociVersion {oci_version!r}")
        relabel = ('if [ "$1" = create ]; then\n'
                   '    b=.; prev=\n'
                   '    for a in "$@"; do [ "$prev" = --bundle ] && b=$a; prev=$a; done\n'
                   '    [ -f "$b/config.json" ] && sed -i \'s/"ociVersion": *"[^"]*"/'
                   f'"ociVersion":"{oci_version}"/\' "$b/config.json"\n'
                   'fi\n')
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\n{relabel}exec {shq(binary)} --root {shq(root)} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def shq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def run_program(tree: str, program: str, name: str, binary: str, scratch: str,
                cgroups: Cgroups | None, timeout: float = PROGRAM_TIMEOUT,
                oci_version: str = "") -> ProgramResult:
    root = os.path.join(scratch, f"root-{name}")
    os.makedirs(root, exist_ok=True)
    rt = wrapper(scratch, name, binary, root, oci_version)
    tmp = tempfile.mkdtemp(prefix=f"{name}-{program[:30]}-", dir=scratch)
    os.chmod(tmp, 0o711)     # as /tmp would be for the suite: a container's mapped root
    #                          must reach the bundle (the suite's own bundle dir is 0700)
    exe = os.path.join(tree, "validation", program, program + ".t")
    env = dict(os.environ, RUNTIME=rt, TMPDIR=tmp)
    before = cgroups.snapshot() if cgroups else set()
    t0 = time.monotonic()
    timed_out = False
    with open(os.path.join(tmp, ".stdout"), "w+b") as out, \
            open(os.path.join(tmp, ".stderr"), "w+b") as err:
        if not os.path.exists(exe):
            rc, text, etext = 127, "", f"{exe}: not built"
        else:
            proc = subprocess.Popen([exe], cwd=tree, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = proc.wait()
            except BaseException:     # interrupted (SIGINT/SIGTERM): end the program, clean up
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                cleanup_after(binary, root, tmp, cgroups, before)
                raise
            out.seek(0)
            err.seek(0)
            text = out.read().decode(errors="replace")
            etext = err.read().decode(errors="replace")
    seconds = time.monotonic() - t0
    left, n_cg, n_mounts = cleanup_after(binary, root, tmp, cgroups, before)
    return ProgramResult(program, name, rc, seconds, text, etext, timed_out, n_mounts, n_cg,
                         len(left))


def cleanup_after(binary: str, root: str, tmp: str, cgroups: Cgroups | None,
                  before: set[str]) -> tuple[list[str], int, int]:
    """Clean up what a program's containers left: containers under our --root, processes
    and cgroups under our cgroup (and a /cgrouptest that appeared), mounts under its TMPDIR.
    Returns (container ids, number of cgroups, number of mounts) that were left."""
    left = cleanup_root(binary, root)
    harness.reap_zombies()
    n_cg = 0
    if cgroups:
        n_cg, pids = cgroups.cleanup(before)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            time.sleep(0.2)
            harness.reap_zombies()
        cgroups.remove(before)
    n_mounts = unmount_under(tmp)
    if not mounts_under(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    return left, n_cg, n_mounts


def cleanup_root(binary: str, root: str) -> list[str]:
    left = [d for d in (os.listdir(root) if os.path.isdir(root) else [])
            if os.path.isdir(os.path.join(root, d))]
    for cid in left:
        for args in (["kill", cid, "KILL"], ["delete", "--force", cid]):
            try:
                subprocess.run([binary, "--root", root, *args], capture_output=True,
                               timeout=60, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pass
    harness.reap_zombies()
    return left


# --- report ----------------------------------------------------------------------------------

def totals(results: dict[str, ProgramResult]) -> dict:
    t = {"programs": len(results), "programs_passed": 0, "programs_failed": 0,
         "programs_skipped": 0, "passed": 0, "failed": 0, "skipped": 0, "program_errors": 0}
    for r in results.values():
        t["programs_" + r.status] += 1
        p, f, s = r.counts
        t["passed"] += p
        t["failed"] += f
        t["skipped"] += s
        if r.program_error():
            t["program_errors"] += 1
    return t


def md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def cell(r: ProgramResult | None) -> str:
    if r is None:
        return "—"
    p, f, s = r.counts
    mark = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip"}[r.status]
    extra = " (error)" if r.program_error() else (" (warning)" if r.warnings() else "")
    return f"{p}/{f}/{s} {mark}{extra}"


def write_report(path: str, runs: dict[str, dict[str, ProgramResult]], meta: dict,
                 known: list[Known], regressions: list[Regression],
                 lane: dict | None = None) -> None:
    names = list(runs)
    progs = sorted({p for r in runs.values() for p in r})
    L = []
    L.append("# runtime-tools validation suite: pyoci vs runc\n")
    L.append("Generated by `conformance/runtime-tools` (see conformance/README.md). The upstream "
             "suite (opencontainers/runtime-tools " + meta.get("source", "") + ") is built "
             "unmodified and every `validation/NAME/NAME.t` runs against each runtime "
             "(`RUNTIME=...`, a private `--root`), one after the other, in one run.\n")
    L.append(f"- Run: {meta.get('date', '')}, pyoci at commit {meta.get('commit') or '?'}")
    L.append(f"- Host: {meta.get('host', '')}")
    for n in names:
        L.append(f"- {n}: {meta.get('versions', {}).get(n, '')}")
    L.append(f"- Go: {meta.get('go', '')}; per-program timeout {meta.get('timeout', '')} s")
    L.append(f"- Wall time: {meta.get('wall', 0):.0f} s for every program and runtime, one "
             f"after the other (build {meta.get('build_s', 0):.0f} s of it, 0 when cached; "
             "not counting any wait for another run's lock)\n")
    L.append("## Totals (one run)\n")
    L.append("| runtime | programs passed | failed | skipped | TAP lines passed | failed | "
             "skipped | programs that errored as a whole |")
    L.append("|---|---|---|---|---|---|---|---|")
    for n in names:
        t = totals(runs[n])
        L.append(f"| {n} | {t['programs_passed']} | {t['programs_failed']} | "
                 f"{t['programs_skipped']} | {t['passed']} | {t['failed']} | {t['skipped']} | "
                 f"{t['program_errors']} |")
    L.append("")
    for n in names:
        big = [(p, r.counts[0]) for p, r in sorted(runs[n].items())
               if r.status == "failed" and r.counts[0] >= 50]
        if big:
            L.append(f"TAP lines {n} passed in programs it fails: " +
                     ", ".join(f"{p} {c}" for p, c in big) + " (the container's runtimetest "
                     "lines count even where the program fails the runtime).\n")
    unknown = [r for r in regressions if r.known is None]
    L.append("## CI gate\n")
    L.append(f"Tests pyoci fails and runc passes in this run: {len(regressions)}; listed in "
             f"`conformance/runtime-tools-known.txt` with a reason: "
             f"{len(regressions) - len(unknown)}; **not listed: {len(unknown)}** "
             f"({'gate passes' if not unknown else 'gate FAILS'}).\n")
    for r in regressions:
        tag = f"known ({CLASSES[r.known.klass]}): {r.known.reason}" if r.known else "**NOT LISTED**"
        L.append(f"- `{r.program}` #{r.number} {md(r.description)}: {md(r.cause)} — {md(tag)}")
    if regressions:
        L.append("")
    L.append("## Per program\n")
    L.append("Cells: TAP lines passed/failed/skipped and the program's verdict; `(error)`: the "
             "program itself failed (non-zero exit, an error printed as YAML only with `1..0`, "
             "a short plan or a timeout).\n")
    L.append("| program | " + " | ".join(names) + " | differs | seconds (" +
             ", ".join(names) + ") |")
    L.append("|---|" + "---|" * len(names) + "---|---|")
    for p in progs:
        rs = [runs[n].get(p) for n in names]
        sig = {(r.counts, r.status) if r else None for r in rs}
        L.append(f"| {p} | " + " | ".join(cell(r) for r in rs) + f" | "
                 f"{'yes' if len(sig) > 1 else ''} | " +
                 ", ".join(f"{r.seconds:.1f}" if r else "—" for r in rs) + " |")
    L.append("")
    L.append("## Every failure, its cause and its class\n")
    L.append("Classes: *this host* (what the machine lacks), *suite bug* (the test is wrong), "
             "*pyoci's* / *runc's* (the runtime's own behaviour). The cause is the test's own "
             "error text (first line); the reason comes from "
             "`conformance/runtime-tools-known.txt`.\n")
    for p in progs:
        rows = []
        for n in names:
            r = runs[n].get(p)
            if r is None:
                continue
            for desc, _occ, num, cause in r.failures():
                k = classify(known, p, n, desc, cause)
                if k:
                    k.used += 1
                cls = CLASSES[k.klass] if k else "**unclassified**"
                reason = k.reason if k else ""
                rows.append(f"| {n} | {num or '—'} | {md(desc)} | {md(cause)} | {cls} | "
                            f"{md(reason)} |")
        if rows:
            L.append(f"### {p}\n")
            L.append("| runtime | # | test | cause | class | reason |")
            L.append("|---|---|---|---|---|---|")
            L += rows
            L.append("")
    warned = [(n, r) for n in names for r in runs[n].values() if r.warnings()]
    if warned:
        L.append("## Warnings (the suite passes the program but says something is wrong)\n")
        for n, r in warned:
            L.append(f"- {n} `{r.program}`: " + "; ".join(md(w) for w in r.warnings()))
        L.append("")
    leftovers = [(n, r) for n in names for r in runs[n].values()
                 if r.left_mounts or r.left_cgroups or r.left_containers]
    L.append("## Left behind after the program (cleaned up by the runner)\n")
    if leftovers:
        L.append("| runtime | program | mounts | cgroups | containers |")
        L.append("|---|---|---|---|---|")
        for n, r in leftovers:
            L.append(f"| {n} | {r.program} | {r.left_mounts} | {r.left_cgroups} | "
                     f"{r.left_containers} |")
    else:
        L.append("Nothing.")
    L.append("")
    if lane:
        L.append(lane_section(lane, known))
    L.append("## Known failures (`conformance/runtime-tools-known.txt`)\n")
    L.append("| program | runtimes | test | class | reason | matched in this run |")
    L.append("|---|---|---|---|---|---|")
    for k in known:
        L.append(f"| {k.program} | {', '.join(sorted(k.runtimes))} | {md(k.description)} | "
                 f"{CLASSES[k.klass]} | {md(k.reason)} | {k.used} |")
    L.append("")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(L))
    os.replace(path + ".tmp", path)


def lane_section(lane: dict, known: list[Known]) -> str:
    """The cgroup programs in the full-kernel lane (pure cgroup v2), from a results file."""
    runs = {n: {p: ProgramResult.from_json(d) for p, d in progs.items()}
            for n, progs in lane["runs"].items()}
    names = list(runs)
    L = ["## Full-kernel lane: the cgroup programs on pure cgroup v2\n"]
    L.append(lane.get("note", "") + "\n")
    meta = lane.get("meta", {})
    L.append(f"Wall time in the guest: {meta.get('wall', 0):.0f} s (TCG, 2 vCPUs); "
             + "; ".join(f"{n}: {v}" for n, v in meta.get("versions", {}).items()) + "\n")
    L.append("| runtime | programs passed | failed | TAP lines passed | failed | skipped |")
    L.append("|---|---|---|---|---|---|")
    for n in names:
        t = totals(runs[n])
        L.append(f"| {n} | {t['programs_passed']} | {t['programs_failed']} | {t['passed']} | "
                 f"{t['failed']} | {t['skipped']} |")
    L.append("")
    L.append("| program | " + " | ".join(names) + " | cause and class (per runtime) |")
    L.append("|---|" + "---|" * len(names) + "---|")
    for p in sorted({p for r in runs.values() for p in r}):
        rs = [runs[n].get(p) for n in names]
        causes = {}
        for n, r in zip(names, rs):
            fs = r.failures() if r else []
            if fs:
                desc, _, _, cause = fs[-1] if r.program_error() else fs[0]
                k = classify(known, p, n, desc, cause)
                if k:
                    k.used += 1
                key = f"{cause} ({CLASSES[k.klass] if k else 'unclassified'})"
                causes.setdefault(key, []).append(n)
        L.append(f"| {p} | " + " | ".join(cell(r) for r in rs) + " | " +
                 md("; ".join(f"{', '.join(ns)}: {c}" for c, ns in causes.items())) + " |")
    L.append("")
    return "\n".join(L)
