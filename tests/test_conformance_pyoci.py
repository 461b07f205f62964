"""Regression gate: the whole conformance suite against pyoci; a check that passed in the
committed conformance/results-pyoci.json must not fail now (new passes are welcome)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "conformance", "run")
RESULTS = os.path.join(REPO, "conformance", "results-pyoci.json")
sys.path.insert(0, os.path.join(REPO, "conformance"))

from ocisuite import catalogue  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.isdir(catalogue.find_specerror_dir()),
                       reason=f"{catalogue.PACKAGE} is not installed"),
]


def test_no_conformance_regression(tmp_path):
    with open(RESULTS) as f:
        committed = json.load(f)
    assert committed["runtime"] == "pyoci"
    out, err = tmp_path / "tap", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([sys.executable, RUN, "--runtime", "pyoci", "--timeout", "20",
                             "--check-against", RESULTS], stdin=subprocess.DEVNULL,
                            stdout=o, stderr=e, timeout=600, cwd=REPO).returncode
    tap, errors = out.read_text(), err.read_text()
    regressed = [ln for ln in errors.splitlines() if ln.startswith("# REGRESSION")]
    failing = [ln for ln in tap.splitlines() if ln.startswith("not ok")]
    assert rc == 0, "\n".join(regressed or errors.splitlines()[-5:]) + "\n" + "\n".join(failing)
    assert tap.splitlines()[-1].endswith("skipped"), tap[-500:]
