"""Tests of the conformance runner itself (conformance/run and conformance/ocisuite)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFORMANCE = os.path.join(REPO, "conformance")
RUN = os.path.join(CONFORMANCE, "run")
sys.path.insert(0, CONFORMANCE)

from ocisuite import catalogue, harness, report  # noqa: E402
from ocisuite.checks import CHECKS, NOT_TESTABLE  # noqa: E402

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$")
RUNC = shutil.which("runc")
needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not RUNC, reason="needs root and runc")
needs_catalogue = pytest.mark.skipif(not os.path.isdir(catalogue.find_specerror_dir()),
                                     reason=f"{catalogue.PACKAGE} is not installed")


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@needs_catalogue
def test_catalogue_has_every_specerror_code():
    reqs = catalogue.load_catalogue()
    assert len(reqs) > 100
    by_code = {r.code: r for r in reqs}
    assert len(by_code) == len(reqs)
    start = by_code["StartNotCreatedGenError"]
    assert start.level == "MUST" and start.reference == "runtime.md#start"
    assert "MUST generate an error" in start.text
    assert by_code["DefaultFilesystems"].level == "SHOULD"
    assert by_code["DevicesMajMinRequired"].level == "REQUIRED"
    # the one comment that opens its quote with a backtick keeps it
    assert by_code["ProcArgsApplyUntilStart"].text.startswith("`process.args` MUST NOT")
    assert all(r.reference and r.text and r.level for r in reqs)
    assert {"NonError", "NonRFCError"}.isdisjoint(by_code)  # unregistered helper codes


def test_parse_go_file_numbers_and_references(tmp_path):
    go = tmp_path / "x.go"
    go.write_text('''package specerror
const (
\t// FirstThing represents "A MUST be B."
\tFirstThing Code = 0xa001 + iota
\t// SecondThing represents `x` SHOULD be y."
\tSecondThing
\tUnregistered
)
var (
\txRef = func(version string) (reference string, err error) {
\t\treturn fmt.Sprintf(referenceTemplate, version, "x.md#anchor"), nil
\t}
)
func init() {
\tregister(FirstThing, rfc2119.Must, xRef)
\tregister(SecondThing, rfc2119.Should, xRef)
}
''')
    reqs = catalogue.parse_go_file(str(go))
    assert [(r.code, r.number, r.level, r.reference) for r in reqs] == [
        ("FirstThing", 0xa001, "MUST", "x.md#anchor"),
        ("SecondThing", 0xa002, "SHOULD", "x.md#anchor")]
    assert reqs[0].text == "A MUST be B."
    assert reqs[1].text == "`x` SHOULD be y."


@needs_catalogue
def test_every_check_code_is_in_the_catalogue_and_every_code_is_mapped():
    codes = {r.code for r in catalogue.load_catalogue()}
    used = {c for ch in CHECKS for c in ch.codes}
    assert used <= codes
    assert set(NOT_TESTABLE) <= codes
    assert codes - used - set(NOT_TESTABLE) == set()
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))


def test_tap_lines_and_summary():
    ch = CHECKS[0]
    ok = report.tap_line(3, ch, report.PASS)
    assert re.match(rf"^ok 3 - {ch.codes[0]}\S* {ch.name}: ", ok)
    skip = report.tap_line(4, ch, report.SKIP, "no AppArmor")
    assert skip.startswith("ok 4 - ") and skip.endswith(" # SKIP no AppArmor")
    bad = report.tap_line(5, ch, report.FAIL, "line one\nline two").splitlines()
    assert bad[0].startswith("not ok 5 - ") and bad[1:] == ["# line one", "# line two"]
    res = {"a": {"result": "pass"}, "b": {"result": "fail"}, "c": {"result": "skip"},
           "d": {"result": "pass"}}
    assert report.summary_line(res) == "2 passed, 1 failed, 1 skipped"


def test_code_verdicts_and_regressions():
    reqs = [catalogue.Requirement(c, i, "MUST", "t", "runtime.go", "runtime.md#x")
            for i, c in enumerate(("A", "B", "C", "D", "RootPathOnPosixConvention"))]
    checks = [harness_check("c1", ("A", "B")), harness_check("c2", ("B",)),
              harness_check("c3", ("C",))]
    results = {"c1": {"result": "pass", "message": ""}, "c2": {"result": "fail", "message": "x"},
               "c3": {"result": "skip", "message": "no resctrl"}}
    v = report.code_verdicts(reqs, checks, results)
    assert v["A"]["verdict"] == report.COVERED_PASS
    assert v["B"]["verdict"] == report.COVERED_FAIL and v["B"]["failed"] == ["c2"]
    assert v["C"]["verdict"] == report.NOT_TESTABLE_HERE and v["C"]["reason"] == "no resctrl"
    assert v["D"]["verdict"] == report.NOT_COVERED
    assert v["RootPathOnPosixConvention"]["verdict"] == report.NOT_TESTABLE_HERE
    before = {"checks": {"c1": {"result": "pass"}, "c2": {"result": "pass"},
                         "c3": {"result": "pass"}}}
    assert report.regressions(before, {"checks": results}) == ["c2"]


def harness_check(name, codes):
    from ocisuite.checks import Check
    return Check(name, codes, name, lambda ctx: None)


def test_list_needs_no_root():
    r = run("--runtime", "runc", "--list", "--filter", "^start_twice ")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "start_twice\tStartNotCreatedGenError,StartNotCreatedHaveNoEffect\t"
        "start on a running container fails and changes nothing"]


@needs_runc
@needs_catalogue
def test_checks_pass_against_runc_and_leave_nothing(tmp_path):
    before_tmp = set(os.listdir("/tmp"))
    r = run("--runtime", "runc", "--filter", r"^(state_fields|start_twice|kill_stopped) ",
            "--report", str(tmp_path / "REPORT.md"))
    lines = r.stdout.splitlines()
    assert lines[0] == "1..3", r.stdout
    assert [ln.split(" - ")[0] for ln in lines if re.match(r"(not )?ok ", ln)] == \
        ["ok 1", "ok 2", "ok 3"], r.stdout + r.stderr
    assert SUMMARY.match(lines[-1]) and lines[-1] == "3 passed, 0 failed, 0 skipped"
    assert r.returncode == 0
    doc = json.loads((tmp_path / "results-runc.json").read_text())
    assert doc["checks"]["start_twice"]["result"] == "pass"
    assert doc["codes"]["StartNotCreatedGenError"]["verdict"] == report.COVERED_PASS
    assert doc["codes"]["DeleteNonStopGenError"]["verdict"] == report.NOT_COVERED
    md = (tmp_path / "REPORT.md").read_text()
    assert "| StartNotCreatedGenError | MUST |" in md and "runc version" in md
    leaked = {d for d in set(os.listdir("/tmp")) - before_tmp if d.startswith("oci-")}
    assert not leaked
    assert not [d for d in os.listdir("/sys/fs/cgroup/pids") if d.startswith("ocict-")]


@needs_runc
@needs_catalogue
def test_check_against_flags_only_regressions(tmp_path):
    fake = tmp_path / "broken-runtime"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    fake.chmod(0o755)
    before = {"checks": {"state_fields": {"result": "pass"},
                         "state_without_id": {"result": "pass"}}}
    (tmp_path / "before.json").write_text(json.dumps(before))
    flt = r"^(state_fields|state_without_id) "
    r = run("--runtime", str(fake), "--filter", flt, "--check-against",
            str(tmp_path / "before.json"))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "REGRESSION: state_fields" in r.stderr
    assert "state_without_id" not in r.stderr  # a runtime that always errors passes that one
    assert r.stdout.splitlines()[-1] == "1 passed, 1 failed, 0 skipped"
    r = run("--runtime", "runc", "--filter", flt, "--check-against", str(tmp_path / "before.json"))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_runc
def test_run_check_cleans_up_after_a_failure(tmp_path):
    from ocisuite.cli import run_check
    from ocisuite.checks import Check

    seen = {}

    def leaves_a_running_container(ctx):
        cid = ctx.new_id()
        ctx.create(cid, ctx.config(cid, args=["sleep", "1000"]))
        seen["pid"] = ctx.state(cid)["pid"]
        seen["workdir"] = ctx.workdir
        seen["cgroup"] = harness.cgroup_dir("pids", ctx.cgroups_path(cid))
        raise harness.CheckFailed("deliberate")

    rootfs = harness.prepare_rootfs()
    res = run_check(Check("leaky", ("EnvCreateImplement",), "leaky", leaves_a_running_container),
                    RUNC, rootfs)
    assert res["result"] == "fail" and res["message"] == "deliberate"
    harness.reap_zombies()
    assert not os.path.exists(seen["workdir"])
    assert not os.path.isdir(seen["cgroup"])
    assert not os.path.exists(f"/proc/{seen['pid']}") or \
        open(f"/proc/{seen['pid']}/stat").read().split()[2] == "Z"
