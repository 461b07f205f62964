"""Results: TAP lines, per-code verdicts, the JSON results file and the Markdown report."""

from __future__ import annotations

import json
import os
import platform
import subprocess

from .catalogue import PACKAGE, SPEC_VERSION, Requirement
from .checks import CHECK_NOTES, KNOWN_DEPARTURES, NOT_TESTABLE, Check

PASS, FAIL, SKIP = "pass", "fail", "skip"
COVERED_PASS = "covered, passing"
COVERED_FAIL = "covered, failing"
NOT_TESTABLE_HERE = "not testable here"
NOT_COVERED = "not yet covered"


def tap_line(n: int, check: Check, result: str, message: str = "") -> str:
    """`ok N - CODES name: description`, `not ok ...`, or `ok ... # SKIP reason`."""
    text = f"{','.join(check.codes)} {check.name}: {check.description}"
    if result == PASS:
        return f"ok {n} - {text}"
    if result == SKIP:
        return f"ok {n} - {text} # SKIP {message}"
    lines = [f"not ok {n} - {text}"]
    lines += [f"# {line}" for line in (message or "failed").splitlines()]
    return "\n".join(lines)


def summary_line(results: dict[str, dict]) -> str:
    c = count(results)
    return f"{c[PASS]} passed, {c[FAIL]} failed, {c[SKIP]} skipped"


def count(results: dict[str, dict]) -> dict[str, int]:
    out = {PASS: 0, FAIL: 0, SKIP: 0}
    for r in results.values():
        out[r["result"]] += 1
    return out


def code_verdicts(catalogue: list[Requirement], checks: list[Check],
                  results: dict[str, dict]) -> dict[str, dict]:
    """code -> {verdict, checks, reason} from the results of the checks that ran."""
    by_code: dict[str, list[str]] = {}
    for ch in checks:
        for code in ch.codes:
            by_code.setdefault(code, []).append(ch.name)
    out = {}
    for req in catalogue:
        names = by_code.get(req.code, [])
        ran = [results[n] for n in names if n in results]
        failed = [n for n in names if n in results and results[n]["result"] == FAIL]
        passed = [n for n in names if n in results and results[n]["result"] == PASS]
        reason = ""
        if failed:
            verdict = COVERED_FAIL
        elif passed:
            verdict = COVERED_PASS
        elif req.code in NOT_TESTABLE:
            verdict, reason = NOT_TESTABLE_HERE, NOT_TESTABLE[req.code]
        elif ran:
            verdict = NOT_TESTABLE_HERE
            reason = "; ".join(sorted({r["message"] for r in ran if r["message"]}))
        else:
            verdict = NOT_COVERED
        out[req.code] = {"verdict": verdict, "checks": names, "failed": failed, "reason": reason,
                         "level": req.level, "reference": req.reference, "text": req.text}
    return out


def host_info() -> dict:
    def pkg_version(pkg: str) -> str:
        try:
            return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
    return {"kernel": platform.release(), "machine": platform.machine(),
            "catalogue": f"{PACKAGE} {pkg_version(PACKAGE)}", "spec": SPEC_VERSION}


def results_document(runtime: dict, catalogue: list[Requirement], checks: list[Check],
                     results: dict[str, dict], command: str, date: str,
                     notes: list[str] = (), host: dict | None = None) -> dict:
    verdicts = code_verdicts(catalogue, checks, results)
    vcount: dict[str, int] = {}
    for v in verdicts.values():
        vcount[v["verdict"]] = vcount.get(v["verdict"], 0) + 1
    doc = {"runtime": runtime["name"], "binary": runtime["binary"], "version": runtime["version"],
           "date": date, "command": command, "host": host or host_info(),
           "summary": {**{k + "ed" if k != SKIP else "skipped": v
                          for k, v in count(results).items()}, "codes": vcount},
           "checks": results, "codes": verdicts}
    if runtime.get("oci_version"):
        doc["oci_version"] = runtime["oci_version"]
    if notes:
        doc["notes"] = list(notes)
    return doc


def merge_documents(parts: list[dict], catalogue: list[Requirement], checks: list[Check],
                    notes: list[str] = (), command: str | None = None) -> list[dict]:
    """One document per runtime (in first-seen order) from results documents of several runs;
    a check's result comes from the last part that ran it. Date: the latest part's."""
    order: list[str] = []
    merged: dict[str, dict] = {}
    for part in parts:
        name = part["runtime"]
        if name not in merged:
            order.append(name)
            merged[name] = {"part": part, "checks": {}}
        merged[name]["checks"].update(part.get("checks", {}))
    date = max(p.get("date", "") for p in parts)
    out = []
    for name in order:
        part = merged[name]["part"]
        runtime = {"name": name, "binary": part["binary"], "version": part["version"],
                   "oci_version": part.get("oci_version")}
        ordered = {c.name: merged[name]["checks"][c.name] for c in checks
                   if c.name in merged[name]["checks"]}
        out.append(results_document(runtime, catalogue, checks, ordered,
                                    command or part.get("command", ""), date,
                                    list(notes) or part.get("notes", []), part.get("host")))
    return out


def write_json(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def regressions(before: dict, now: dict) -> list[str]:
    """Checks that passed in `before` and fail in `now` (checks not run now are ignored)."""
    old, new = before.get("checks", {}), now.get("checks", {})
    return sorted(n for n, r in old.items()
                  if r.get("result") == PASS and new.get(n, {}).get("result") == FAIL)


def _cell(verdict: str) -> str:
    return {COVERED_PASS: "pass", COVERED_FAIL: "**FAIL**", NOT_TESTABLE_HERE: "n/t",
            NOT_COVERED: "—"}[verdict]


def _esc(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


SCHEMA_NOTE = ("Schema: pyoci validates configs against its own schemas, which accept a few "
               "values the upstream runtime-spec schema rejects because runc and crun accept "
               "them (`rprivate`, `rshared`, `rslave`, `runbindable` rootfsPropagation, ...): "
               "each departure and the audit of every enum, pattern and required field "
               "against runc and crun are in [docs/schema-departures.md]"
               "(../docs/schema-departures.md).")


def markdown(docs: list[dict], catalogue: list[Requirement], checks: list[Check]) -> str:
    names = [d["runtime"] for d in docs]
    host = docs[0]["host"]
    out = ["# OCI runtime-spec conformance report", "",
           "Generated by pyoci's conformance suite; regenerate with:", "",
           f"    {docs[0]['command']}", "",
           f"- Date: {docs[0]['date']}",
           f"- Host kernel: Linux {host['kernel']} ({host['machine']})",
           f"- Target spec: OCI runtime-spec {host['spec']}",
           f"- Requirement catalogue: `specerror` package of {host['catalogue']}, "
           f"{len(catalogue)} codes",
           ]
    out += [f"- {note}" for note in docs[0].get("notes", [])]
    for d in docs:
        out.append(f"- Runtime `{d['runtime']}`: {d['version']} (`{d['binary']}`)"
                   + (f"; its configs are labelled ociVersion {d['oci_version']} "
                      f"(it refuses {host['spec'].lstrip('v')})" if d.get("oci_version") else ""))
    out += ["", "Verdicts per code: **pass** = covered and every covering check passes; "
            "**FAIL** = a covering check fails; n/t = not testable on this host or on Linux "
            "(reason given); — = not yet covered.", "",
            SCHEMA_NOTE, "",
            "## Summary", "", "| | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names)]
    rows = [("checks passed", lambda d: d["summary"]["passed"]),
            ("checks failed", lambda d: d["summary"]["failed"]),
            ("checks skipped", lambda d: d["summary"]["skipped"])]
    for v in (COVERED_PASS, COVERED_FAIL, NOT_TESTABLE_HERE, NOT_COVERED):
        rows.append((f"codes {v}", lambda d, v=v: d["summary"]["codes"].get(v, 0)))
    for label, fn in rows:
        out.append(f"| {label} | " + " | ".join(str(fn(d)) for d in docs) + " |")
    out += ["", "## Requirements", "",
            "| Code | Level | Spec section | " + " | ".join(names) + " | Checks |",
            "|---|---|---|" + "---|" * len(names) + "---|"]
    for req in catalogue:
        cells = [_cell(d["codes"][req.code]["verdict"]) for d in docs]
        chk = ", ".join(docs[0]["codes"][req.code]["checks"]) or "—"
        out.append(f"| {req.code} | {req.level} | [{req.reference}]({req.url}) | "
                   + " | ".join(cells) + f" | {chk} |")
    out += ["", "## Checks", "", "| Check | Codes | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names)]
    for ch in checks:
        if not any(ch.name in d["checks"] for d in docs):
            continue
        cells = [{PASS: "pass", FAIL: "**FAIL**", SKIP: "skip"}.get(
            d["checks"].get(ch.name, {}).get("result"), "—") for d in docs]
        out.append(f"| {ch.name} | {', '.join(ch.codes)} | " + " | ".join(cells) + " |")
    if len(docs) > 1:
        out += disagreements(docs)
    for d in docs:
        failed = {n: r for n, r in d["checks"].items() if r["result"] == FAIL}
        skipped = {n: r for n, r in d["checks"].items() if r["result"] == SKIP}
        out += ["", f"## `{d['runtime']}`: failures and skips", ""]
        if not failed and not skipped:
            out.append("None.")
        for n, r in sorted(failed.items()):
            out.append(f"- FAIL `{n}` ({', '.join(r['codes'])}): {_esc(r['message'])}")
            note = KNOWN_DEPARTURES.get((d["runtime"], n))
            if note:
                out.append(f"  - known departure: {note}")
        for n, r in sorted(skipped.items()):
            out.append(f"- skip `{n}`: {_esc(r['message'])}")
    ran = {n for d in docs for n in d["checks"]}
    notes = [(n, note) for n, note in CHECK_NOTES.items() if n in ran]
    if notes:
        out += ["", "## Notes on checks", ""]
        out += [f"- `{n}`: {_esc(note)}" for n, note in notes]
    nt = [(req, docs[0]["codes"][req.code]["reason"]) for req in catalogue
          if docs[0]["codes"][req.code]["verdict"] == NOT_TESTABLE_HERE]
    out += ["", "## Not testable", "", "| Code | Level | Reason |", "|---|---|---|"]
    out += [f"| {req.code} | {req.level} | {_esc(reason)} |" for req, reason in nt]
    return "\n".join(out) + "\n"


def disagreements(docs: list[dict]) -> list[str]:
    """Checks the first runtime (the subject) fails while a control passes, and checks that
    no runtime passes: the cells a reader must look at."""
    subject, controls = docs[0], docs[1:]
    names = [n for n in subject["checks"]]
    worse, nobody = [], []
    for n in names:
        res = {d["runtime"]: d["checks"].get(n, {}).get("result") for d in docs}
        passing = [r for r, v in res.items() if v == PASS]
        if res[subject["runtime"]] == FAIL and passing:
            worse.append(f"- `{n}`: {_esc(subject['checks'][n]['message'])} "
                         f"(passes with {', '.join(passing)})")
        elif not passing and all(v in (FAIL, SKIP) for v in res.values()):
            why = "; ".join(sorted({f"{r}: {d['checks'][n]['result']}: {d['checks'][n]['message']}"
                                    for d in docs for r in [d["runtime"]] if n in d["checks"]}))
            note = CHECK_NOTES.get(n)
            nobody.append(f"- `{n}`: {_esc(why)}" + (f". Why: {_esc(note)}" if note else ""))
    out = ["", f"## `{subject['runtime']}` against "
           + ", ".join(f"`{d['runtime']}`" for d in controls), "",
           f"Checks `{subject['runtime']}` fails while another runtime passes:", ""]
    out += worse or ["None."]
    out += ["", "Checks no runtime passes:", ""]
    out += nobody or ["None."]
    return out
