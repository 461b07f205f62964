"""Command line of conformance/runtime-tools (see its docstring and conformance/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import harness, upstream as up


def host_line() -> str:
    cg = "cgroup v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else \
        "hybrid cgroups (v1 controllers)"
    lsm = "none"
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsm = f.read().strip() or "none"
    except OSError:
        pass
    return f"Linux {platform.release()}, {cg}, LSMs: {lsm}, {os.cpu_count()} CPUs"


LOCK = "/run/pyoci-runtime-tools.lock"


def machine_lock(path: str = LOCK):
    """One run at a time on a machine: the suite's absolute cgroupsPath (/cgrouptest in every
    hierarchy) is shared, so two runs side by side see each other's containers and limits
    ("container's cgroup is not empty", another run's memory limit). Held until exit."""
    import fcntl
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"# waiting for another runtime-tools run on this machine ({path}): the "
              "suite's /cgrouptest cgroups are machine-wide", flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def git_commit() -> str:
    """The project's commit the run tested (with `+changes` when the tree differs)."""
    try:
        head = subprocess.run(["git", "-C", up.REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", up.REPO, "status", "--porcelain", "--",
                                "pyoci"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return head + (" +changes in pyoci/" if dirty.strip() else "")


def parse(argv):
    ap = argparse.ArgumentParser(prog="conformance/runtime-tools")
    ap.add_argument("--runtime", action="append", default=[],
                    help="pyoci | runc | crun | /path (repeatable; default pyoci and runc). "
                         "The gate compares the first with runc.")
    ap.add_argument("--program", default="", help="only programs matching this regex")
    ap.add_argument("--timeout", type=float, default=up.PROGRAM_TIMEOUT,
                    help="per program and runtime, seconds (default %(default)s)")
    ap.add_argument("--source", default=os.environ.get("PYOCI_RUNTIME_TOOLS_SRC",
                                                        up.DEFAULT_SOURCE))
    ap.add_argument("--known", default=up.KNOWN_FILE)
    ap.add_argument("--report", help="write the Markdown report here")
    ap.add_argument("--results", help="write the raw results (JSON) here")
    ap.add_argument("--lane-results", help="include this results file (from the lane) in "
                                           "the report")
    ap.add_argument("--report-from", help="no run: the report from a --results file")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--no-gate", action="store_true", help="exit 0 whatever the results")
    ap.add_argument("--oci-version", action="append", default=[], metavar="NAME=VERSION",
                    help="relabel the suite's configs for runtime NAME at create (default: "
                         + ", ".join(f"{k}={v}" for k, v in harness.OCI_VERSIONS.items()) + ")")
    ap.add_argument("--lane", action="store_true",
                    help="run the selected programs (default: the cgroup ones) in the "
                         "full-kernel lane's guest (lane/run) for pyoci, runc and crun")
    ap.add_argument("--emit-results", action="store_true",
                    help="print the results as one `# results <JSON>` line (the lane)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    try:
        known = up.load_known(a.known)
    except ValueError as e:
        print(f"runtime-tools: {e}", file=sys.stderr)
        return 2
    lane = None
    if a.lane_results:
        with open(a.lane_results) as f:
            lane = json.load(f)
    if a.report_from:
        with open(a.report_from) as f:
            doc = json.load(f)
        runs = {n: {p: up.ProgramResult.from_json(d) for p, d in progs.items()}
                for n, progs in doc["runs"].items()}
        return finish(a, runs, doc["meta"], known, lane)

    src = os.path.abspath(a.source)
    if not os.path.isdir(os.path.join(src, "validation")):
        print(f"# SKIP runtime-tools: the suite's source is not at {src} "
              f"(--source DIR or PYOCI_RUNTIME_TOOLS_SRC)")
        return 0
    if os.geteuid() != 0:
        print("runtime-tools: must run as root (the suite creates containers)", file=sys.stderr)
        return 2
    if a.lane:
        return run_in_lane(a, src, known)
    t_all = time.monotonic()
    try:
        tree = up.build(src, log=lambda m: print(m, flush=True))
    except RuntimeError as e:
        print(f"runtime-tools: {e}", file=sys.stderr)
        return 2
    build_s = time.monotonic() - t_all
    if a.build_only:
        print(tree)
        return 0
    names = a.runtime or ["pyoci", "runc"]
    binaries = {}
    for spec in names:
        try:
            binaries[os.path.basename(spec) if os.sep in spec else spec] = \
                harness.resolve_runtime(spec)
        except FileNotFoundError as e:
            print(f"runtime-tools: {e}", file=sys.stderr)
            return 2
    versions = dict(harness.OCI_VERSIONS)
    for kv in a.oci_version:
        k, sep, v = kv.partition("=")
        if not sep:
            print(f"runtime-tools: --oci-version {kv!r}: expected NAME=VERSION", file=sys.stderr)
            return 2
        versions[k] = v
    programs = [p for p in up.programs_in(tree) if p != "util" and re.search(a.program, p)]
    if not programs:
        print(f"runtime-tools: no program matches {a.program!r}", file=sys.stderr)
        return 2

    t_lock = time.monotonic()
    _lock = machine_lock()   # the open, locked file: held until the run ends
    waited = time.monotonic() - t_lock
    up.private_mount_namespace()
    harness.set_subreaper()

    def terminated(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminated)       # clean up as after Ctrl-C
    cgroups = up.Cgroups(f"pyoci-rtools-{os.getpid()}")
    scratch = tempfile.mkdtemp(prefix="pyoci-rtools-")
    os.chmod(scratch, 0o711)
    runs: dict[str, dict[str, up.ProgramResult]] = {n: {} for n in binaries}
    try:
        for p in programs:
            for n, b in binaries.items():
                r = up.run_program(tree, p, n, b, scratch, cgroups, a.timeout,
                                   versions.get(n, ""))
                runs[n][p] = r
                pa, fa, sk = r.counts
                err = r.program_error()
                print(f"# {p:36} {n:6} {pa:4} passed {fa:3} failed {sk:3} skipped "
                      f"{r.status:7} {r.seconds:6.1f}s" + (f"  [{err}]" if err else ""),
                      flush=True)
    finally:
        cgroups.leave()
        up.unmount_under(scratch)
        if not up.mounts_under(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
    meta = {"source": os.path.basename(src), "host": host_line(), "commit": git_commit(),
            "versions": {n: harness.runtime_version(b) for n, b in binaries.items()},
            "go": open(os.path.join(tree, ".built")).read().split(" ")[0] if os.path.exists(
                os.path.join(tree, ".built")) else "",
            "timeout": a.timeout, "wall": time.monotonic() - t_all - waited, "build_s": build_s,
            "lock_wait": waited,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "oci_versions": {n: versions[n] for n in binaries if n in versions}}
    doc = {"meta": meta, "runs": {n: {p: r.to_json() for p, r in rs.items()}
                                  for n, rs in runs.items()}}
    if a.results:
        with open(a.results + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.results + ".tmp", a.results)
    if a.emit_results:
        print("# results " + json.dumps(doc), flush=True)
    return finish(a, runs, meta, known, lane)


def finish(a, runs, meta, known, lane) -> int:
    names = list(runs)
    print(f"# runtime-tools ({meta.get('source', '')}), wall {meta.get('wall', 0):.0f}s")
    for n in names:
        t = up.totals(runs[n])
        print(f"# {n:6} programs {t['programs_passed']} passed, {t['programs_failed']} failed, "
              f"{t['programs_skipped']} skipped; TAP lines {t['passed']} passed, "
              f"{t['failed']} failed, {t['skipped']} skipped")
    regressions = []
    subject = names[0] if names else ""
    if "runc" in runs and subject and subject != "runc":
        regressions = up.gate(runs[subject], runs["runc"], known, subject)
        for p in sorted(set(runs[subject]) & set(runs["runc"])):
            x, y = runs[subject][p], runs["runc"][p]
            if (x.counts, x.status) != (y.counts, y.status):
                print(f"# differs: {p}: {subject} {up.cell(x)}, runc {up.cell(y)}")
        for r in regressions:
            tag = (f"known, {up.CLASSES[r.known.klass]}: {r.known.reason}" if r.known
                   else "NOT LISTED in " + os.path.relpath(a.known))
            print(f"# {subject} fails, runc passes: {r.program} #{r.number} "
                  f"{r.description}: {r.cause} [{tag}]")
    if a.report:
        up.write_report(a.report, runs, meta, known, regressions, lane)
        print(f"# report: {a.report}")
    unknown = [r for r in regressions if r.known is None]
    if unknown:
        print(f"# GATE FAILS: {len(unknown)} test(s) {subject} fails and runc passes, "
              f"not listed in {os.path.relpath(a.known)}")
        return 0 if a.no_gate else 1
    return 0


LANE_RUN = os.path.join(up.REPO, "lane", "run")
LANE_PROGRAMS = "cgroups"
LANE_RUNTIMES = ["pyoci", "runc", "crun"]
LANE_RESULTS = os.path.join(up.CONFORMANCE, "build", "results-lane-runtime-tools.json")
LANE_NOTE = ("The suite's cgroup programs in the full-kernel lane's guest (Debian's stock "
             "kernel under QEMU, pure cgroup v2, every controller), pyoci, runc and crun. "
             "runtime-tools' cgroup readers support cgroup v1 only: on cgroup v2 "
             "`cgroups.FindCgroup` returns \"cgroup v2 is not supported yet\" (or the v1 path "
             "is not found), so these programs cannot check a v2 limit for any runtime; what "
             "they still show is whether each runtime creates the container with the config's "
             "resources. crun's configs are labelled ociVersion 1.0.2 (crun 1.8.1 refuses "
             "1.3.0).")


def run_in_lane(a, src: str, known) -> int:
    """The programs in the lane's guest (lane/run): build here first (the guest sees this
    tree read-only), run this same command inside with --emit-results, keep its results."""
    try:
        up.build(src, log=lambda m: print(m, flush=True))
    except RuntimeError as e:
        print(f"runtime-tools: {e}", file=sys.stderr)
        return 2
    runtimes = a.runtime or LANE_RUNTIMES
    cmd = [LANE_RUN, "--timeout", "1800", "--",
           os.path.join(".venv", "bin", "python"), "conformance/runtime-tools", "--no-gate",
           "--emit-results", "--program", a.program or LANE_PROGRAMS, "--timeout",
           str(a.timeout), "--source", src, "--known", a.known]
    for r in runtimes:
        cmd += ["--runtime", r]
    for kv in a.oci_version:
        cmd += ["--oci-version", kv]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=up.REPO, stdout=subprocess.PIPE, text=True)
    doc = None
    for line in proc.stdout:
        if line.startswith("# results "):
            doc = json.loads(line[len("# results "):])
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    rc = proc.wait()
    if doc is None:
        print(f"runtime-tools: the lane's guest gave no results (lane/run exit {rc})",
              file=sys.stderr)
        return rc if rc in (124, 125) else 2
    doc["note"] = LANE_NOTE
    doc["meta"]["wall"] = time.monotonic() - t0
    out = a.results or LANE_RESULTS
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"# lane results: {out}")
    runs = {n: {p: up.ProgramResult.from_json(d) for p, d in progs.items()}
            for n, progs in doc["runs"].items()}
    a.report = None
    return finish(a, runs, doc["meta"], known, None)
