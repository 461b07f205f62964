"""Tests of the upstream runtime-tools runner itself (conformance/runtime-tools,
conformance/ocisuite/upstream.py): TAP parsing (with the YAML-only errors that print `1..0`
and exit 0), program verdicts, known failures and the CI gate, the backports source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "conformance"))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from ocisuite import upstream as up  # noqa: E402
import backports  # noqa: E402

# What runtime-tools' tap-go prints, taken from real runs.
YAML_ONLY = textwrap.dedent("""\
    TAP version 13
      ---
      {
        "error": "Hooks MUST be called in the listed order\\nRefer to: https://github.com/opencontainers/runtime-spec/blob/v1.3.0/config.md#posix-platform-hooks"
      }
      ...
    1..0
    """)

MIXED = textwrap.dedent("""\
    TAP version 13
    ok 1 - `delete` operation MUST generate an error if it is not provided the container ID
      ---
      {
        "error": "exit status 1",
        "reference": "https://github.com/opencontainers/runtime-spec/blob/v1.3.0/runtime.md#delete"
      }
      ...
    not ok 2 - attempting to `delete` a container that is not `stopped` MUST generate an error
      ---
      {
        "reference": "https://github.com/opencontainers/runtime-spec/blob/v1.3.0/runtime.md#delete"
      }
      ...
    not ok 3 - attempting to `delete` a container that is not `stopped` MUST have no effect on the container
      ---
      {
        "error": "exit status 1",
        "stderr": "time=\\"2026-12-06T04:22:51Z\\" level=error msg=\\"container does not exist\\"\\n"
      }
      ...
    ok 4 - attempting to `delete` a container that is not `stopped` MUST generate an error
    ok 5 # SKIP linux.seccomp not set
    1..5
    """)  # noqa: E501 - runtime-tools output as it prints it


def result(stdout, rc=0, stderr="", name="p", runtime="pyoci", timed_out=False):
    return up.ProgramResult(name, runtime, rc, 1.0, stdout, stderr, timed_out)


def test_tap_lines_directives_and_yaml():
    tap = up.parse_tap(MIXED)
    assert tap.plan == 5 and not tap.orphan_diags
    assert [(ln.number, ln.status) for ln in tap.lines] == [
        (1, "passed"), (2, "failed"), (3, "failed"), (4, "passed"), (5, "skipped")]
    assert tap.lines[0].description.startswith("`delete` operation MUST")
    assert tap.lines[4].directive == "SKIP linux.seccomp not set"
    assert tap.lines[4].description == ""
    assert tap.lines[2].diag["error"] == "exit status 1"
    assert tap.lines[2].cause() == "exit status 1: container does not exist"
    assert tap.counts() == (2, 2, 1)


def test_yaml_only_error_with_empty_plan_and_exit_0_is_a_failure():
    r = result(YAML_ONLY, rc=0)
    assert r.tap.plan == 0 and r.tap.lines == [] and len(r.tap.orphan_diags) == 1
    assert r.status == "failed"
    assert r.program_error() == "Hooks MUST be called in the listed order"
    assert r.failures() == [(up.PROGRAM_LINE, 1, 0, "Hooks MUST be called in the listed order")]
    assert (up.PROGRAM_LINE, 1) not in r.passed_keys()


def test_program_verdicts():
    assert result(MIXED).status == "failed"
    ok = "TAP version 13\nok 1 - a\nok 2 - b # SKIP no\n1..2\n"
    assert result(ok).status == "passed" and result(ok).program_error() == ""
    # a non-zero exit fails the program even when every printed line passed
    r = result(ok, rc=1, stderr="failed to create the container\nruntime: boom\nexit status 1\n")
    assert r.status == "failed"
    assert r.program_error() == "exit status 1: failed to create the container / runtime: boom"
    # a short plan, no plan, a timeout, `1..0` with nothing printed
    assert result("ok 1 - a\n1..3\n").program_error() == "planned 3 tests, ran 1"
    assert result("ok 1 - a\n").program_error() == "no TAP plan"
    assert "timed out" in result(ok, rc=-9, timed_out=True).program_error()
    # `1..0` and nothing else: the lifecycle programs' success (poststop, prestart_fail)
    assert result("TAP version 13\n1..0\n").status == "passed"
    # no TAP at all: the *_fail programs report through their exit status only
    assert result("", rc=0).status == "passed"
    assert result("", rc=1, stderr="The runtime MUST generate an error\n").program_error() == \
        "exit status 1: The runtime MUST generate an error"
    # util.Skip: `1..1` and one skipped line
    skip = "TAP version 13\n1..1\nok 1 # skip cgroup v2 is not supported yet\n"
    assert result(skip).status == "skipped"


def test_several_tap_documents_in_one_program():
    # linux_cgroups_cpus: one document per test function, each with its own plan
    two = ("TAP version 13\nok 1 - a\n# expect: 1, actual: 1\nok 2 - b\n1..2\n"
           "TAP version 13\n1..0\n")
    r = result(two)
    assert r.tap.docs == [[2, 2], [0, 0]] and r.status == "passed" and r.counts == (2, 0, 0)
    assert r.tap.lines[0].comments == ["expect: 1, actual: 1"]
    short = "TAP version 13\nok 1 - a\n1..1\nTAP version 13\nok 1 - b\n1..2\n"
    assert result(short).program_error() == "planned 2 tests, ran 1"
    # a YAML-only error in the second document
    r = result("TAP version 13\nok 1 - a\n1..1\n" + YAML_ONLY)
    assert r.status == "failed" and r.program_error().startswith("Hooks MUST be called")


def test_repeated_descriptions_are_told_apart_by_occurrence():
    r = result(MIXED)
    keys = r.passed_keys()
    d = "attempting to `delete` a container that is not `stopped` MUST generate an error"
    assert (d, 2) in keys and (d, 1) not in keys
    assert [(f[0], f[1], f[2]) for f in r.failures()] == [
        (d, 1, 2), ("attempting to `delete` a container that is not `stopped` MUST have no "
                    "effect on the container", 1, 3)]


def write_known(tmp_path, text):
    p = tmp_path / "known.txt"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_known_file_format_is_checked(tmp_path):
    with pytest.raises(ValueError, match="5 fields"):
        up.load_known(write_known(tmp_path, "a | pyoci | * | host\n"))
    with pytest.raises(ValueError, match="unknown class"):
        up.load_known(write_known(tmp_path, "a | pyoci | * | nope | why\n"))
    with pytest.raises(ValueError, match="reason"):
        up.load_known(write_known(tmp_path, "a | pyoci | * | host | \n"))
    ks = up.load_known(write_known(tmp_path, """\
        # comment
        hooks | pyoci,runc | (program) | suite | the suite reads the log too early

        * | * | x | host | no BFQ
        """))
    assert [k.program for k in ks] == ["hooks", "*"]
    assert ks[0].runtimes == {"pyoci", "runc"} and ks[0].lineno == 2


def test_gate_fails_only_on_unlisted_tests_runc_passes(tmp_path):
    both_fail = "TAP version 13\nnot ok 1 - same\n1..1\n"
    runc = {"a": result("TAP version 13\nok 1 - x\nok 2 - y\n1..2\n", runtime="runc"),
            "b": result(both_fail, runtime="runc"),
            "c": result("TAP version 13\nok 1 - z\n1..1\n", runtime="runc"),
            "d": result("TAP version 13\nok 1 - w\n1..1\n", runtime="runc")}
    pyoci = {"a": result("TAP version 13\nok 1 - x\nnot ok 2 - y\n1..2\n"),
             "b": result(both_fail),                               # runc fails it too
             "c": result(YAML_ONLY),                               # program error
             "d": result("TAP version 13\nok 1 - w\n1..1\n")}
    regs = up.gate(pyoci, runc, [])
    assert {(r.program, r.description) for r in regs} == {("a", "y"), ("c", up.PROGRAM_LINE)}
    assert all(r.known is None for r in regs)
    assert not any(r.program in ("b", "d") for r in regs)
    known = up.load_known(write_known(tmp_path, """\
        a | pyoci | y | pyoci | tracked in issue 10
        c | pyoci | (program) | host | no BFQ here
        """))
    regs = up.gate(pyoci, runc, known)
    assert regs and all(r.known is not None for r in regs)
    # an entry for runc only does not excuse pyoci
    known = up.load_known(write_known(tmp_path, "a | runc | y | runc | runc's own\n"))
    assert any(r.known is None for r in up.gate(pyoci, runc, known))


def test_gate_counts_tests_pyoci_never_ran():
    runc = {"a": result("TAP version 13\nok 1 - x\nok 2 - y\n1..2\n", runtime="runc")}
    pyoci = {"a": result("TAP version 13\nok 1 - x\n", rc=1,
                         stderr="failed to create the container\n")}
    regs = up.gate(pyoci, runc, [])
    assert [(r.program, r.description) for r in regs] == [("a", up.PROGRAM_LINE)]


def test_results_round_trip_and_report(tmp_path):
    runs = {"pyoci": {"a": result(YAML_ONLY)},
            "runc": {"a": result("TAP version 13\nok 1 - x\n1..1\n", runtime="runc")}}
    runs2 = {n: {p: up.ProgramResult.from_json(r.to_json()) for p, r in rs.items()}
             for n, rs in runs.items()}
    assert runs2["pyoci"]["a"].program_error() == runs["pyoci"]["a"].program_error()
    known = up.load_known(write_known(tmp_path, "a | pyoci | (program) | suite | because\n"))
    regs = up.gate(runs2["pyoci"], runs2["runc"], known)
    rep = tmp_path / "R.md"
    up.write_report(str(rep), runs2, {"wall": 3.0}, known, regs)
    text = rep.read_text()
    assert "| pyoci | 0 | 1 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "| runc | 1 | 0 | 0 | 1 | 0 | 0 | 0 |" in text
    assert "Hooks MUST be called in the listed order" in text and "because" in text
    assert "not listed: 0" in text


def test_backports_source_derived_from_deb822(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(textwrap.dedent("""\
        Types: deb
        # a comment
        URIs: http://mirror.example/debian
        Suites: bookworm bookworm-updates
        Components: main contrib
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        URIs: http://mirror.example/debian-security
        Suites: bookworm-security
        Components: main
        """))
    path, text = backports.plan(str(tmp_path), "bookworm")
    assert path.endswith("sources.list.d/pyoci-backports.sources")
    assert "URIs: http://mirror.example/debian\n" in text
    assert "Suites: bookworm-backports\n" in text and "Components: main contrib" in text
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in text
    (d / "bp.sources").write_text("Types: deb\nURIs: x\nSuites: bookworm-backports\n")
    assert backports.plan(str(tmp_path), "bookworm") is None


def test_backports_source_derived_from_one_line_list(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://m.example/debian bookworm main # x\n"
        "deb http://m.example/debian-security bookworm-security main\n")
    path, text = backports.plan(str(tmp_path), "bookworm")
    assert path.endswith("pyoci-backports.list")
    assert text == "deb [arch=amd64] http://m.example/debian bookworm-backports main\n"
    with pytest.raises(SystemExit, match="no APT source"):
        backports.plan(str(tmp_path), "trixie")


def test_runner_skips_without_the_source(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "conformance", "runtime-tools"),
                        "--source", str(tmp_path / "absent")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    assert r.stdout.startswith("# SKIP runtime-tools: the suite's source is not at")


def test_known_failures_file_is_valid():
    known = up.load_known()
    for k in known:
        assert k.reason and k.klass in up.CLASSES


def test_known_entry_by_cause(tmp_path):
    known = up.load_known(write_known(tmp_path, """\
        * | pyoci | cause: close_range: Operation not permitted | pyoci | issue 10 (1)
        """))
    runc = {"a": result("TAP version 13\nok 1 - x\n1..1\n", runtime="runc"),
            "b": result("TAP version 13\nok 1 - y\n1..1\n", runtime="runc")}
    pyoci = {"a": result("TAP version 13\n", rc=1,
                         stderr="failed to create the container\npyoci: close_range: "
                                "Operation not permitted\n"),
             "b": result("TAP version 13\n", rc=1, stderr="pyoci: other\n")}
    regs = {r.program: r for r in up.gate(pyoci, runc, known)}
    assert regs["a"].known is not None and regs["b"].known is None


def test_wrapper_adds_private_root_and_relabels_oci_version(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text('{\n\t"ociVersion": "1.3.0",\n\t"process": {}\n}')
    rt = up.wrapper(str(tmp_path), "crun", "/bin/echo", "/x/root", "1.0.2")
    out = subprocess.run([rt, "create", "--bundle", str(bundle), "id1"], capture_output=True,
                         text=True).stdout
    assert out.split() == ["--root", "/x/root", "create", "--bundle", str(bundle), "id1"]
    assert '"ociVersion":"1.0.2"' in (bundle / "config.json").read_text()
    plain = up.wrapper(str(tmp_path), "runc", "/bin/echo", "/y")
    (bundle / "config.json").write_text('{"ociVersion": "1.3.0"}')
    subprocess.run([plain, "create", "--bundle", str(bundle), "id1"], check=True)
    assert '"1.3.0"' in (bundle / "config.json").read_text()
    with pytest.raises(ValueError):
        up.wrapper(str(tmp_path), "crun", "/bin/echo", "/x", "1.0'; rm -rf /")


def suite_cgroups() -> set[str]:
    """The runner's own cgroups and the suite's (cgrouptest, testdir) anywhere."""
    return {os.path.join(dp, d) for dp, dirs, _ in os.walk("/sys/fs/cgroup") for d in dirs
            if d.startswith("pyoci-rtools-") or d in (up.ABS_CGROUP, "testdir")}


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(not os.path.isdir(os.path.join(up.DEFAULT_SOURCE, "validation")) or
                    not up.find_go(), reason="needs the runtime-tools source and Go >= 1.21")
def test_runner_cleans_up_what_the_suite_leaves(tmp_path):
    """runc leaves its mounts behind without a mount namespace (linux_ns_itype): the runner
    counts and removes them; afterwards no mount, cgroup, scratch dir or container remains."""
    import glob

    before_tmp = set(glob.glob("/tmp/pyoci-rtools-*"))
    before_cg = suite_cgroups()
    res = tmp_path / "r.json"
    r = subprocess.run([sys.executable, os.path.join(REPO, "conformance", "runtime-tools"),
                        "--program", "^(linux_ns_itype|kill_no_effect)$", "--runtime", "runc",
                        "--results", str(res)], capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(res.read_text())
    itype = doc["runs"]["runc"]["linux_ns_itype"]
    assert itype["status"] == "passed" and itype["left_mounts"] > 0, itype
    with open("/proc/self/mountinfo") as f:
        assert "pyoci-rtools-" not in f.read()
    assert set(glob.glob("/tmp/pyoci-rtools-*")) == before_tmp
    assert suite_cgroups() == before_cg


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(not os.path.isdir(os.path.join(up.DEFAULT_SOURCE, "validation")) or
                    not up.find_go(), reason="needs the runtime-tools source and Go >= 1.21")
def test_runner_cleans_up_when_terminated():
    """SIGTERM in the middle of a program (kill: containers running for seconds): the program
    is ended and its containers, cgroups and scratch directory are removed."""
    import glob
    import time
    subprocess.run([sys.executable, os.path.join(REPO, "conformance", "runtime-tools"),
                    "--build-only"], check=True, capture_output=True, timeout=900)
    before_tmp = set(glob.glob("/tmp/pyoci-rtools-*"))
    before_cg = suite_cgroups()
    p = subprocess.Popen([sys.executable, os.path.join(REPO, "conformance", "runtime-tools"),
                          "--program", "^kill$", "--runtime", "runc"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            os.listdir(os.path.join(d, "root-runc"))
            for d in set(glob.glob("/tmp/pyoci-rtools-*")) - before_tmp
            if os.path.isdir(os.path.join(d, "root-runc"))):
        time.sleep(0.1)
    p.terminate()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + 15, out + err
    assert set(glob.glob("/tmp/pyoci-rtools-*")) == before_tmp
    assert suite_cgroups() == before_cg     # empty: kill.t and its containers are gone


def test_one_run_at_a_time_per_machine(tmp_path, capsys):
    """The suite's /cgrouptest is machine-wide: a second run waits for the first."""
    import threading
    from ocisuite import upstream_cli
    lock = str(tmp_path / "lock")
    first = upstream_cli.machine_lock(lock)
    got = threading.Event()
    t = threading.Thread(target=lambda: (upstream_cli.machine_lock(lock), got.set()))
    t.start()
    assert not got.wait(0.5)
    first.close()
    assert got.wait(30)
    t.join()
    assert "waiting for another runtime-tools run" in capsys.readouterr().out


def test_lane_mode_runs_the_guest_command_and_keeps_its_results(tmp_path, monkeypatch, capsys):
    """--lane: lane/run with this command inside (--emit-results); the `# results` line
    becomes the results file, the rest is relayed, the gate applies to what came back; a
    lost guest (124/125) is passed on for lane/ci to retry."""
    from ocisuite import upstream_cli
    src = tmp_path / "src"
    (src / "validation").mkdir(parents=True)
    doc = {"meta": {"source": "x", "wall": 1.0},
           "runs": {"pyoci": {"a": result(YAML_ONLY).to_json()},
                    "runc": {"a": result("TAP version 13\nok 1 - x\n1..1\n",
                                         runtime="runc").to_json()}}}
    fake = tmp_path / "lane-run"
    argv_file = tmp_path / "argv"
    fake.write_text("#!/bin/sh\necho \"$@\" > " + str(argv_file) + "\necho '# relayed'\n"
                    "cat " + str(tmp_path / "doc") + "\nexit ${FAKE_RC:-0}\n")
    fake.chmod(0o755)
    (tmp_path / "doc").write_text("# results " + json.dumps(doc) + "\n")
    monkeypatch.setattr(upstream_cli, "LANE_RUN", str(fake))
    monkeypatch.setattr(upstream_cli.up, "build", lambda src, log=None: str(tmp_path))
    monkeypatch.setattr(upstream_cli.os, "geteuid", lambda: 0)
    out = tmp_path / "lane.json"
    known = tmp_path / "known.txt"
    known.write_text("")
    args = ["--lane", "--source", str(src), "--known", str(known), "--results", str(out)]
    assert upstream_cli.main(args) == 1            # pyoci fails what runc passes: gate
    text = capsys.readouterr().out
    assert "# relayed" in text and "# results" not in text and "GATE FAILS" in text
    saved = json.loads(out.read_text())
    assert saved["note"] == upstream_cli.LANE_NOTE and set(saved["runs"]) == {"pyoci", "runc"}
    called = argv_file.read_text().split()
    assert called[:3] == ["--timeout", "1800", "--"] and "--emit-results" in called
    assert called[called.index("--program") + 1] == "cgroups"
    assert [called[i + 1] for i, a in enumerate(called) if a == "--runtime"] == \
        ["pyoci", "runc", "crun"]
    known.write_text("a | pyoci | (program) | suite | why\n")
    assert upstream_cli.main(args) == 0
    (tmp_path / "doc").write_text("")
    monkeypatch.setenv("FAKE_RC", "125")
    assert upstream_cli.main(args) == 125           # lost guest: lane/ci runs it again
