"""conformance/run: run the checks against one or more runtimes; TAP, JSON and Markdown out."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import traceback

from . import harness, report
from .catalogue import load_catalogue
from .checks import CHECKS, Check


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="conformance/run", description=__doc__)
    p.add_argument("--runtime", action="append",
                   help="pyoci | runc | crun | /path/to/binary (repeat for a side-by-side report)")
    p.add_argument("--filter", metavar="REGEX",
                   help="run only checks whose name, codes or description match")
    p.add_argument("--check", action="append", metavar="NAME",
                   help="run only this check (repeatable; combines with --filter)")
    p.add_argument("--oci-version", action="append", default=[], metavar="NAME=VERSION",
                   help="label the configs runtime NAME gets with this ociVersion "
                        f"(default {harness.OCI_VERSIONS})")
    p.add_argument("--emit-results", action="store_true",
                   help="print each runtime's results document as a `# results JSON` line")
    p.add_argument("--merge", nargs="+", metavar="RESULTS_JSON",
                   help="run nothing: write --report from results files (e.g. of several "
                        "lane guests; one runtime's checks may be split over files)")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report's header (where and how it was made)")
    p.add_argument("--results-name", default="results-{runtime}.json", metavar="TEMPLATE",
                   help="name of the results files written beside --report "
                        "(default %(default)s)")
    p.add_argument("--command", help=argparse.SUPPRESS)  # regenerate command for --merge
    p.add_argument("--report", metavar="FILE",
                   help="write a Markdown report there and results-<runtime>.json beside it")
    p.add_argument("--check-against", metavar="RESULTS_JSON",
                   help="exit 3 if a check that passed in this results file fails now")
    p.add_argument("--tap", action="store_true",
                   help="plain TAP only (default output is TAP too, plus runtime headers)")
    p.add_argument("--catalogue-dir", help="specerror directory (default: found via dpkg -L)")
    p.add_argument("--timeout", type=float, default=harness.COMMAND_TIMEOUT, metavar="SECONDS",
                   help="bound for each runtime command (default %(default)s)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    a = p.parse_args(argv)
    if not a.runtime and not a.merge:
        p.error("--runtime is required (or --merge)")
    if a.merge and not a.report:
        p.error("--merge needs --report")
    return a


def oci_versions(pairs: list[str]) -> dict[str, str]:
    out = dict(harness.OCI_VERSIONS)
    for kv in pairs:
        name, sep, version = kv.partition("=")
        if not sep or not name or not version:
            raise ValueError(f"--oci-version {kv!r}: expected NAME=VERSION")
        out[name] = version
    return out


def select(checks: list[Check], pattern: str | None, names: list[str] | None = None) -> list[Check]:
    if names:
        unknown = set(names) - {c.name for c in checks}
        if unknown:
            raise ValueError(f"--check: no such check: {', '.join(sorted(unknown))}")
        checks = [c for c in checks if c.name in names]
    if not pattern:
        return list(checks)
    rx = re.compile(pattern)
    return [c for c in checks if rx.search(f"{c.name} {' '.join(c.codes)} {c.description}")]


def run_check(check: Check, binary: str, rootfs: str, oci_version: str | None = None) -> dict:
    """Run one check with its own context; cleanup always runs."""
    ctx = harness.Ctx(binary, rootfs, check.name, oci_version=oci_version)
    try:
        check.fn(ctx)
        result, message = report.PASS, ""
    except harness.CheckSkipped as e:
        result, message = report.SKIP, str(e)
    except harness.CheckFailed as e:
        result, message = report.FAIL, str(e)
    except Exception as e:  # a broken runtime must not stop the suite
        tb = traceback.extract_tb(e.__traceback__)[-1]
        result = report.FAIL
        message = f"error: {type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno})"
    finally:
        ctx.cleanup()
    # keep reports reproducible: no temp dirs, random ids or log timestamps in messages
    message = message.replace(ctx.workdir, "$WORK")
    message = re.sub(r"oct\d+-[0-9a-f]{10}", "$ID", message)
    message = re.sub(r'time="[^"]*" level=', "level=", message)
    return {"result": result, "message": message, "codes": list(check.codes),
            "description": check.description}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        checks = select(CHECKS, args.filter, args.check)
        versions = oci_versions(args.oci_version)
    except ValueError as e:
        print(f"conformance/run: {e}", file=sys.stderr)
        return 2
    if args.merge:
        return merge(args)
    if args.list:
        for c in checks:
            print(f"{c.name}\t{','.join(c.codes)}\t{c.description}")
        return 0
    if os.geteuid() != 0:
        print("conformance/run must run as root", file=sys.stderr)
        return 2
    try:
        runtimes = [(spec, harness.resolve_runtime(spec)) for spec in args.runtime]
        catalogue = load_catalogue(args.catalogue_dir)
    except (FileNotFoundError, OSError) as e:
        print(f"conformance/run: {e}", file=sys.stderr)
        return 2
    harness.COMMAND_TIMEOUT = args.timeout
    harness.set_subreaper()
    rootfs = harness.prepare_rootfs()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "conformance/run " + " ".join(
        [f"--runtime {shlex.quote(s)}" for s, _ in runtimes]
        + ([f"--filter {shlex.quote(args.filter)}"] if args.filter else [])
        + [f"--check {shlex.quote(c)}" for c in args.check or []]
        + [f"--oci-version {shlex.quote(v)}" for v in args.oci_version]
        + ([f"--report {shlex.quote(args.report)}"] if args.report else []))
    print(f"1..{len(checks) * len(runtimes)}", flush=True)
    n = 0
    docs, all_results = [], {}
    for spec, binary in runtimes:
        name = spec if os.sep not in spec else os.path.basename(binary)
        version = harness.runtime_version(binary)
        label = versions.get(name)
        if not args.tap:
            print(f"# runtime {name}: {version} ({binary})"
                  + (f", configs labelled ociVersion {label}" if label else ""), flush=True)
        results: dict[str, dict] = {}
        for check in checks:
            n += 1
            results[check.name] = run_check(check, binary, rootfs, label)
            r = results[check.name]
            print(report.tap_line(n, check, r["result"], r["message"]), flush=True)
        if len(runtimes) > 1:
            print(f"# {name}: {report.summary_line(results)}", flush=True)
        docs.append(report.results_document(
            {"name": name, "binary": binary, "version": version, "oci_version": label},
            catalogue, CHECKS, results, command, date, args.note))
        if args.emit_results:
            print("# results " + json.dumps(docs[-1], sort_keys=True), flush=True)
        all_results.update({f"{name}/{k}": v for k, v in results.items()})
    print(report.summary_line(all_results), flush=True)

    if args.report:
        out_dir = os.path.dirname(os.path.abspath(args.report))
        for d in docs:
            name = args.results_name.format(runtime=d["runtime"])
            report.write_json(os.path.join(out_dir, name), d)
        with open(args.report, "w") as f:
            f.write(report.markdown(docs, catalogue, CHECKS))
    if args.check_against:
        with open(args.check_against) as f:
            before = json.load(f)
        regressed = report.regressions(before, docs[0])
        for name in regressed:
            print(f"# REGRESSION: {name} passed in {args.check_against} and fails now",
                  file=sys.stderr)
        return 3 if regressed else 0
    return 1 if report.count(all_results)[report.FAIL] else 0


def merge(args: argparse.Namespace) -> int:
    """--merge: one report (and results-<runtime>.json) from several runs' results files."""
    try:
        catalogue = load_catalogue(args.catalogue_dir)
        parts = []
        for path in args.merge:
            with open(path) as f:
                parts.append(json.load(f))
    except (OSError, ValueError) as e:
        print(f"conformance/run: {e}", file=sys.stderr)
        return 2
    docs = report.merge_documents(parts, catalogue, CHECKS, args.note, args.command)
    out_dir = os.path.dirname(os.path.abspath(args.report))
    for d in docs:
        report.write_json(os.path.join(out_dir, args.results_name.format(runtime=d["runtime"])), d)
    with open(args.report, "w") as f:
        f.write(report.markdown(docs, catalogue, CHECKS))
    return 0
