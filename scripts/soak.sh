#!/usr/bin/env bash
# The large soak and concurrency run of issue 11 (tests/test_soak.py): 1,000 lifecycles
# (create, start, exec, exec -d, kill, delete, and run), 50 containers at once, and 50 rounds
# of 20 racing commands on one container, with the counts of mounts, cgroups, fds, zombies,
# processes and state entries before, during and after (JSON lines on stdout, and in
# $PYOCI_SOAK_REPORT if set). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh || exit 1
export PYOCI_SOAK_CYCLES="${PYOCI_SOAK_CYCLES:-1000}"
export PYOCI_SOAK_PARALLEL="${PYOCI_SOAK_PARALLEL:-50}"
export PYOCI_SOAK_ROUNDS="${PYOCI_SOAK_ROUNDS:-50}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider -s tests/test_soak.py "$@"
