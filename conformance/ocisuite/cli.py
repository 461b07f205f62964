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
    p.add_argument("--runtime", action="append", required=True,
                   help="pyoci | runc | crun | /path/to/binary (repeat for a side-by-side report)")
    p.add_argument("--filter", metavar="REGEX",
                   help="run only checks whose name, codes or description match")
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
    return p.parse_args(argv)


def select(checks: list[Check], pattern: str | None) -> list[Check]:
    if not pattern:
        return list(checks)
    rx = re.compile(pattern)
    return [c for c in checks if rx.search(f"{c.name} {' '.join(c.codes)} {c.description}")]


def run_check(check: Check, binary: str, rootfs: str) -> dict:
    """Run one check with its own context; cleanup always runs."""
    ctx = harness.Ctx(binary, rootfs, check.name)
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
    checks = select(CHECKS, args.filter)
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
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "conformance/run " + " ".join(
        [f"--runtime {shlex.quote(s)}" for s, _ in runtimes]
        + ([f"--filter {shlex.quote(args.filter)}"] if args.filter else [])
        + ([f"--report {shlex.quote(args.report)}"] if args.report else []))
    print(f"1..{len(checks) * len(runtimes)}", flush=True)
    n = 0
    docs, all_results = [], {}
    for spec, binary in runtimes:
        name = spec if os.sep not in spec else os.path.basename(binary)
        version = harness.runtime_version(binary)
        if not args.tap:
            print(f"# runtime {name}: {version} ({binary})", flush=True)
        results: dict[str, dict] = {}
        for check in checks:
            n += 1
            results[check.name] = run_check(check, binary, rootfs)
            r = results[check.name]
            print(report.tap_line(n, check, r["result"], r["message"]), flush=True)
        if len(runtimes) > 1:
            print(f"# {name}: {report.summary_line(results)}", flush=True)
        docs.append(report.results_document(
            {"name": name, "binary": binary, "version": version}, catalogue, CHECKS, results,
            command, date))
        all_results.update({f"{name}/{k}": v for k, v in results.items()})
    print(report.summary_line(all_results), flush=True)

    if args.report:
        out_dir = os.path.dirname(os.path.abspath(args.report))
        for d in docs:
            report.write_json(os.path.join(out_dir, f"results-{d['runtime']}.json"), d)
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
