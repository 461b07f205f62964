#!/usr/bin/env bash
# Set everything up and run the whole test suite, as root (the tests run real containers):
# pytest on this host, then the full-kernel lane (lane/ci: a QEMU guest with pure cgroup v2,
# AppArmor and systemd, where runc and crun run the same checks as controls).
# Arguments go to the host's pytest and skip the lane; PYOCI_SKIP_LANE=1 skips it too.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ $# -eq 0 ] && [ -z "${PYOCI_SKIP_LANE:-}" ]; then
    lane/ci
    lane_rc=$?
    [ $rc -ne 0 ] || rc=$lane_rc
fi
exit $rc
