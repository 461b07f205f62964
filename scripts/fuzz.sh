#!/usr/bin/env bash
# The large fuzz run of issue 11 (tests/test_fuzz.py at PYOCI_FUZZ_SCALE, default 42:
# 4,200 configs, 1,260 exec --process, 1,260 update --resources, 1,260 state files and
# 2,520 command lines: 10,500 cases), as root, with Hypothesis's statistics (cases per test,
# events, time). Extra arguments go to pytest (e.g. -k config).
#   bash scripts/fuzz.sh                      # the large run
#   PYOCI_FUZZ_SCALE=100 bash scripts/fuzz.sh -k config
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh || exit 1
export PYOCI_FUZZ_SCALE="${PYOCI_FUZZ_SCALE:-42}"
start=$(date +%s)
.venv/bin/python -m pytest -q -p no:cacheprovider -s --hypothesis-show-statistics \
    tests/test_fuzz.py "$@"
rc=$?
echo "fuzz: scale $PYOCI_FUZZ_SCALE, $(( $(date +%s) - start )) s, exit $rc"
exit $rc
