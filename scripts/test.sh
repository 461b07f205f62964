#!/usr/bin/env bash
# Set everything up and run the whole test suite, as root (the tests run real containers):
# the linters (scripts/lint.sh), pytest on this host, the upstream runtime-tools suite (pyoci vs
# runc), then the full-kernel lane (lane/ci: a QEMU guest with pure cgroup v2, AppArmor and
# systemd, where runc and crun run the same checks as controls).
# Arguments go to the host's pytest and skip the rest; PYOCI_SKIP_RUNTIME_TOOLS=1 and
# PYOCI_SKIP_LANE=1 skip those steps.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# The linters first: a finding fails the run, after the tests have run all the same.
lint_rc=0
if [ $# -eq 0 ]; then
    bash scripts/lint.sh || lint_rc=1
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
[ $rc -ne 0 ] || rc=$lint_rc
# The upstream runtime-tools validation suite against pyoci and runc (conformance/runtime-tools):
# fails when pyoci fails a test runc passes in the same run, unless
# conformance/runtime-tools-known.txt lists it with a reason. The run's report goes to
# conformance/build/; PYOCI_SKIP_RUNTIME_TOOLS=1 skips it.
if [ $# -eq 0 ] && [ -z "${PYOCI_SKIP_RUNTIME_TOOLS:-}" ]; then
    mkdir -p conformance/build
    .venv/bin/python conformance/runtime-tools --report conformance/build/REPORT-runtime-tools.md \
        --results conformance/build/results-runtime-tools.json
    rt_rc=$?
    [ $rc -ne 0 ] || rc=$rt_rc
fi
if [ $# -eq 0 ] && [ -z "${PYOCI_SKIP_LANE:-}" ]; then
    lane/ci
    lane_rc=$?
    [ $rc -ne 0 ] || rc=$lane_rc
fi
exit $rc
