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


def test_configs_carry_the_runtimes_oci_version(tmp_path):
    from ocisuite.cli import oci_versions
    plain = harness.Ctx("/bin/true", str(tmp_path), "plain", tmp_base=str(tmp_path))
    crun = harness.Ctx("/bin/true", str(tmp_path), "crun", tmp_base=str(tmp_path),
                       oci_version="1.0.2")
    assert plain.config("a")["ociVersion"] == "1.3.0"
    assert crun.config("a")["ociVersion"] == "1.0.2"
    assert oci_versions([])["crun"] == "1.0.2" and "pyoci" not in oci_versions([])
    assert oci_versions(["crun=1.2.0", "x=1.1.0"]) == {"crun": "1.2.0", "x": "1.1.0"}
    with pytest.raises(ValueError, match="NAME=VERSION"):
        oci_versions(["crun"])


def test_select_by_check_name():
    from ocisuite.cli import select
    assert [c.name for c in select(CHECKS, None, ["start_twice", "state_fields"])] == \
        ["state_fields", "start_twice"]  # suite order
    assert [c.name for c in select(CHECKS, "^start", ["start_twice", "state_fields"])] == \
        ["start_twice"]
    with pytest.raises(ValueError, match="no_such_check"):
        select(CHECKS, None, ["no_such_check"])


def test_merge_documents_joins_split_runs():
    reqs = [catalogue.Requirement(c, i, "MUST", "t", "runtime.go", "runtime.md#x")
            for i, c in enumerate(("A", "B"))]
    checks = [harness_check("c1", ("A",)), harness_check("c2", ("B",))]

    def part(name, results, oci=None):
        return report.results_document(
            {"name": name, "binary": f"/bin/{name}", "version": f"{name} 1", "oci_version": oci},
            reqs, checks, results, "cmd", "2026-01-01 00:00 UTC",
            host={"kernel": "6.1", "machine": "x86_64", "catalogue": "c", "spec": "v1.3.0"})
    ok = {"result": "pass", "message": "", "codes": []}
    bad = {"result": "fail", "message": "boom", "codes": ["B"]}
    parts = [part("pyoci", {"c2": bad}), part("crun", {"c2": ok}, "1.0.2"),
             part("pyoci", {"c1": ok}), part("crun", {"c1": ok}, "1.0.2")]
    docs = report.merge_documents(parts, reqs, checks, ["Where: a lane"], "lane-report")
    assert [d["runtime"] for d in docs] == ["pyoci", "crun"]
    py, cr = docs
    assert list(py["checks"]) == ["c1", "c2"] and py["summary"]["failed"] == 1
    assert py["codes"]["A"]["verdict"] == report.COVERED_PASS
    assert py["codes"]["B"]["verdict"] == report.COVERED_FAIL
    assert cr["oci_version"] == "1.0.2" and "oci_version" not in py
    assert py["command"] == "lane-report" and py["host"]["kernel"] == "6.1"
    md = report.markdown(docs, reqs, checks)
    assert "- Where: a lane" in md
    assert "Runtime `crun`: crun 1 (`/bin/crun`); its configs are labelled ociVersion 1.0.2" in md
    assert "| c2 | B | **FAIL** | pass |" in md
    assert "## `pyoci` against `crun`" in md
    assert "- `c2`: boom (passes with crun)" in md
    assert "Checks no runtime passes:\n\nNone." in md


def load_lane_report():
    import importlib.machinery
    import importlib.util
    path = os.path.join(CONFORMANCE, "lane-report")
    loader = importlib.machinery.SourceFileLoader("lane_report", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("lane_report", loader))
    loader.exec_module(mod)
    return mod


def test_lane_report_shards_and_parses_guest_output():
    lr = load_lane_report()
    assert lr.shards(["a", "b", "c"], 2) == [["a", "c"], ["b"]]
    assert lr.shards(["a"], 2) == [["a"]]
    assert set(lr.LANE_CHECKS) <= {c.name for c in CHECKS}
    assert len(set(lr.LANE_CHECKS)) == len(lr.LANE_CHECKS)
    out = ('ok 1 - x\n# results {"runtime": "pyoci"}\n'
           '# runtime runc\n# results {"runtime": "runc"}\n')
    assert [d["runtime"] for d in lr.parse_output(out)] == ["pyoci", "runc"]
    argv = lr.guest_argv(["pyoci", "crun"], ["state_fields"], 30, 600)
    assert argv[argv.index("--") + 1:][-6:] == ["--runtime", "pyoci", "--runtime", "crun",
                                                "--check", "state_fields"]


@needs_catalogue
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_emit_results_prints_each_runtimes_document(tmp_path):
    fake = tmp_path / "crun"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    fake.chmod(0o755)
    r = run("--runtime", str(fake), "--check", "state_without_id", "--emit-results",
            "--oci-version", "crun=1.0.1")
    docs = [json.loads(ln[len("# results "):]) for ln in r.stdout.splitlines()
            if ln.startswith("# results ")]
    assert len(docs) == 1, r.stdout + r.stderr
    assert docs[0]["runtime"] == "crun" and docs[0]["oci_version"] == "1.0.1"
    assert docs[0]["checks"]["state_without_id"]["result"] == "pass"
    assert "configs labelled ociVersion 1.0.1" in r.stdout
